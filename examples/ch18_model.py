"""Chapter 18: the Model object, written with the book's own class names.

The book's closing chapter 18 run: the chapter 15 network (Dense(2, 512) with L2 5e-4 on
weights and biases - ReLU - Dropout(0.1) - Dense(512, 3) - Softmax) trained by a Model with
categorical cross-entropy, Adam(learning_rate=0.05, decay=5e-5) and categorical accuracy on
spiral_data(1000, 3) for 10,000 full-batch epochs, then validated once on spiral_data(100, 3).
The book's Model.train (portnn.nnfs.Model) prints ``epoch: N, ...`` every --print-every epochs
(counted from 1, as in every example; the script adds the last epoch's line where that skips
it), then the book's Model.evaluate prints the validation line. The Model fuses softmax and
cross-entropy for the fast backward pass and turns dropout off when validating. portnn
(float32) ends at ``epoch: 10000, acc: 0.880, loss: 0.402 (data_loss: 0.354, reg_loss: 0.048),
lr: 0.0333...`` and ``validation, acc: 0.860, loss: 0.360``; 10,000 epochs of 3,000 samples
through 512 neurons take a few minutes on a CPU.

    python examples/ch18_model.py [--backend torch] [--epochs 10000] [--plot history.png]
"""

from portnn.nnfs import (
    Accuracy_Categorical,
    Activation_ReLU,
    Activation_Softmax,
    Layer_Dense,
    Layer_Dropout,
    Loss_CategoricalCrossentropy,
    Model,
    Optimizer_Adam,
    init,
    spiral_data,
)
from portnn.scripts import example_parser, parse_example, run_script


def main() -> None:
    args = parse_example(
        example_parser(
            "The book's chapter 18 run (the Model object).",
            epochs=10000,
            plot="loss, accuracy and lr",
        )
    )

    init()
    X, y = spiral_data(samples=1000, classes=3)
    X_test, y_test = spiral_data(samples=100, classes=3)

    model = Model()
    model.add(Layer_Dense(2, 512, weight_regularizer_l2=5e-4, bias_regularizer_l2=5e-4))
    model.add(Activation_ReLU())
    model.add(Layer_Dropout(0.1))
    model.add(Layer_Dense(512, 3))
    model.add(Activation_Softmax())
    model.set(
        loss=Loss_CategoricalCrossentropy(),
        optimizer=Optimizer_Adam(learning_rate=0.05, decay=5e-5),
        accuracy=Accuracy_Categorical(),
    )
    model.finalize()

    history = model.train(X, y, epochs=args.epochs, print_every=args.print_every)
    if args.print_every and args.epochs % args.print_every:  # the book's train skips the last
        last = {key: values[-1] for key, values in history.items()}
        print(
            f"epoch: {args.epochs}, acc: {last['accuracy']:.3f}, loss: {last['loss']:.3f} "
            f"(data_loss: {last['data_loss']:.3f}, reg_loss: {last['regularization_loss']:.3f}), "
            f"lr: {last['learning_rate']}"
        )
    model.evaluate(X_test, y_test)  # the book's validation line, without dropout

    if args.plot:
        from portnn.plot import plot_history

        print("saved", plot_history(history, args.plot, title="chapter 18"))


if __name__ == "__main__":
    run_script(main)  # errors in one line, as the portnn command reports them
