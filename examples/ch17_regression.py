"""Chapter 17: regression of a sine wave (a linear output and mean squared error).

The book's run: sine_data() (1,000 points of sin(2 pi x) on [0, 1)); Dense(1, 64) - ReLU -
Dense(64, 64) - ReLU - Dense(64, 1) - Linear; mean squared error; Adam(learning_rate=0.005,
decay=1e-3); 10,001 full-batch epochs. Accuracy counts the outputs within std(y) / 250 of the
target; the book reaches 0.981. Written with portnn's Model; portnn (float32) ends at
``epoch: 10001, acc: 0.983`` (``final, acc: 0.983``) with a mean squared error of about 1e-6.

This chapter alone starts its weights at 0.1 * normal (its Layer_Dense draws
``0.1 * np.random.randn``); every other chapter, and portnn's Dense by default, at 0.01. So each
Dense here says ``weight_scale=0.1``, as the book's own code must with portnn.nnfs:
``Layer_Dense(1, 64, weight_scale=0.1)``. At 0.01 the fit climbs far more slowly.

    python examples/ch17_regression.py [--backend torch] [--epochs 10001] [--plot history.png]
"""

import portnn as pn
from portnn.scripts import example_parser, parse_example, run_script


def main() -> None:
    args = parse_example(
        example_parser(
            "The book's chapter 17 run (sine regression).",
            epochs=10001,
            plot="loss, accuracy and lr",
        )
    )

    pn.seed(0)
    X, y = pn.datasets.sine()

    model = pn.Model(
        [
            pn.Dense(1, 64, weight_scale=0.1),  # the book's chapter 17 starts at 0.1, not 0.01
            pn.ReLU(),
            pn.Dense(64, 64, weight_scale=0.1),
            pn.ReLU(),
            pn.Dense(64, 1, weight_scale=0.1),
            pn.Linear(),
        ]
    )
    model.set(
        loss=pn.MeanSquaredError(),
        optimizer=pn.Adam(learning_rate=0.005, decay=1e-3),
        accuracy=pn.RegressionAccuracy(),  # |prediction - y| < std(y) / 250
    )

    history = model.train(X, y, epochs=args.epochs, print_every=args.print_every)
    loss, accuracy = model.evaluate(X, y)
    print(f"final, acc: {accuracy:.3f}, loss: {loss:.3g}")

    if args.plot:
        from portnn.plot import plot_history

        print("saved", plot_history(history, args.plot, title="chapter 17"))


if __name__ == "__main__":
    run_script(main)  # errors in one line, as the portnn command reports them
