"""Chapter 19: Fashion-MNIST, 28x28 grey images of ten kinds of clothing.

The book's run: images scaled to [-1, 1] and flattened to 784 values; Dense(784, 128) - ReLU -
Dense(128, 128) - ReLU - Dense(128, 10) - Softmax; categorical cross-entropy;
Adam(decay=1e-3); 10 epochs in shuffled batches of 128, validated on the 10,000 test images
after every epoch. The book reaches validation accuracy 0.87-0.89.

The data comes from --data FOLDER (the four IDX files or the book's PNG folders) or portnn's
data folder; --download fetches it (about 30 MB). --synthetic trains on random images of the
real shape instead, to try the script with no files and no network (accuracy stays near 0.1).

    python examples/ch19_fashion_mnist.py [--download] [--backend cupy] [--save model.npz]
"""

import numpy as np

import portnn as pn
from portnn.scripts import example_parser, parse_example, run_script


def main() -> None:
    parser = example_parser(
        "The book's chapter 19 run (Fashion-MNIST).",
        epochs=10,
        print_every=1,
        print_every_help="epochs between progress lines",
        plot="loss, accuracy and lr",
    )
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--data", metavar="FOLDER", help="where the Fashion-MNIST files are")
    parser.add_argument("--download", action="store_true", help="fetch the files if missing")
    parser.add_argument("--synthetic", action="store_true", help="random data of the real shape")
    parser.add_argument("--samples", type=int, help="train on the first N samples (test on N/6)")
    parser.add_argument(
        "--save", metavar="PATH", help="save the trained model (for portnn predict)"
    )
    args = parse_example(parser)
    pn.seed(0)

    if args.synthetic:
        rng = np.random.default_rng(0)
        X = rng.uniform(-1, 1, (60_000, 784)).astype(np.float32)
        X_test = rng.uniform(-1, 1, (10_000, 784)).astype(np.float32)
        y, y_test = rng.integers(0, 10, 60_000, np.uint8), rng.integers(0, 10, 10_000, np.uint8)
    else:
        try:
            X, y, X_test, y_test = pn.datasets.fashion_mnist(args.data, download=args.download)
        except FileNotFoundError:
            where = args.data or pn.datasets.default_data_dir()
            raise FileNotFoundError(
                f"Fashion-MNIST was not found in {where}; pass --download to fetch it (about "
                "30 MB), --data FOLDER to read it from FOLDER, or --synthetic for random data"
            ) from None
    if args.samples:
        X, y = X[: args.samples], y[: args.samples]
        X_test, y_test = X_test[: max(1, args.samples // 6)], y_test[: max(1, args.samples // 6)]

    model = pn.Model(
        [
            pn.Dense(X.shape[1], 128),
            pn.ReLU(),
            pn.Dense(128, 128),
            pn.ReLU(),
            pn.Dense(128, 10),
            pn.Softmax(),
        ]
    )
    model.set(loss=pn.CategoricalCrossentropy(), optimizer=pn.Adam(decay=1e-3))

    history = model.train(
        X,
        y,
        validation_data=(X_test, y_test),
        epochs=args.epochs,
        batch_size=args.batch_size,
        print_every=args.print_every,
    )
    loss, accuracy = model.evaluate(X_test, y_test)
    print(f"test ({len(X_test)} images), acc: {accuracy:.3f}, loss: {loss:.3f}")

    if args.save:
        model.save(args.save)
        print("saved", args.save)
    if args.plot:
        from portnn.plot import plot_history

        print("saved", plot_history(history, args.plot, title="chapter 19"))


if __name__ == "__main__":
    run_script(main)  # errors in one line, as the portnn command reports them
