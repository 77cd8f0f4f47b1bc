"""Chapter 16: binary logistic regression (a sigmoid output and binary cross-entropy).

The book's run: spiral_data(samples=100, classes=2) with the labels as a column;
Dense(2, 64) with L2 5e-4 on weights and biases - ReLU - Dense(64, 1) - Sigmoid; binary
cross-entropy; Adam(decay=5e-7); 10,001 full-batch epochs; validated on a fresh
spiral_data(100, 2). The book ends near acc 0.95-0.97, loss 0.22-0.26 and validation acc
0.92-0.95. Written with portnn's Model; portnn (float32) ends at ``epoch: 10001, acc: 0.940,
loss: 0.264 (data_loss: 0.211, reg_loss: 0.052)`` and ``validation, acc: 0.905, loss: 0.257``.

    python examples/ch16_binary_logistic.py [--backend torch] [--epochs 10001] [--plot r.png]
"""

import portnn as pn
from portnn.scripts import example_parser, parse_example, run_script


def main() -> None:
    args = parse_example(
        example_parser("The book's chapter 16 run (binary logistic).", epochs=10001)
    )

    pn.seed(0)
    X, y = pn.datasets.spiral(100, 2)
    y = y.reshape(-1, 1)  # one output per sample: 0 or 1

    model = pn.Model(
        [
            pn.Dense(2, 64, weight_regularizer_l2=5e-4, bias_regularizer_l2=5e-4),
            pn.ReLU(),
            pn.Dense(64, 1),
            pn.Sigmoid(),
        ]
    )
    model.set(
        loss=pn.BinaryCrossentropy(),
        optimizer=pn.Adam(decay=5e-7),
        accuracy=pn.BinaryAccuracy(),  # the book's Accuracy_Categorical(binary=True)
    )

    # Drawn after the weights, as in the book, so seed 0 gives the book's test data too.
    X_test, y_test = pn.datasets.spiral(100, 2)
    y_test = y_test.reshape(-1, 1)

    # Prints the book's lines; the last two are the final figures.
    model.train(
        X, y, epochs=args.epochs, validation_data=(X_test, y_test), print_every=args.print_every
    )

    if args.plot:
        from portnn.plot import plot_decision_regions

        print("saved", plot_decision_regions(model, X_test, y_test, args.plot, title="chapter 16"))


if __name__ == "__main__":
    run_script(main)  # errors in one line, as the portnn command reports them
