"""A convolutional network on Fashion-MNIST: what the book's chapter 19 MLP cannot reach.

The images go in as NCHW arrays, (batch, 1, 28, 28); the network is the recipe's
(``portnn train fashion-mnist --model cnn``): two blocks of Conv2D 3x3 ("same", He),
BatchNormalization, ReLU and MaxPool2D(2), with 32 and 64 channels, then Flatten,
Dense(3136, 128), ReLU, Dense(128, 10), Softmax; Adam(0.001, decay 1e-3), batches of 128,
validated on the 10,000 test images after every epoch. On JAX the step is compiled
(``jax.jit``); on a GPU pass --backend cupy or torch.

The data comes from --data FOLDER (the four IDX files or the book's PNG folders) or portnn's
data folder; --download fetches it (about 30 MB). --synthetic trains on random images of the
real shape instead, to try the script with no files and no network (accuracy stays near 0.1).

    python examples/cnn_fashion_mnist.py [--download] [--backend jax] [--save model.npz]
"""

import numpy as np

import portnn as pn
from portnn.scripts import example_parser, parse_example, run_script


def main() -> None:
    parser = example_parser(
        "A convolutional network on Fashion-MNIST.",
        epochs=5,
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

    # The datasets give each image flattened to 784 values; the CNN takes them as images.
    X, X_test = X.reshape(-1, 1, 28, 28), X_test.reshape(-1, 1, 28, 28)
    model = pn.recipes.get("fashion-mnist").build_cnn()

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

        print("saved", plot_history(history, args.plot, title="a CNN on Fashion-MNIST"))


if __name__ == "__main__":
    run_script(main)  # errors in one line, as the portnn command reports them
