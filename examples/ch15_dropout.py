"""Chapter 15: dropout, in the book's code style.

The book's run: spiral_data(samples=1000, classes=3); Dense(2, 512) with L2 5e-4 on weights
and biases - ReLU - Dropout(0.1) - Dense(512, 3) - softmax with categorical cross-entropy;
Adam(learning_rate=0.05, decay=5e-5); 10,001 full-batch epochs, then a validation pass (no
dropout) on a fresh spiral_data(100, 3). Dropout keeps the training figures noisy and a little
below the validation's: portnn (float32) ends at ``epoch: 10001, acc: 0.877, loss: 0.391
(data_loss: 0.345, reg_loss: 0.046), lr: 0.0333...`` and ``validation, acc: 0.900, loss: 0.367``
(epochs count from 1 here, from 0 in the book's loop).
3,000 samples through 512 neurons for 10,001 epochs take a minute or two on a CPU.

``Layer_Dropout.forward(inputs)`` drops, as in the book; portnn's own ``Dropout`` drops only
when called with ``training=True`` (which a Model does for you).

    python examples/ch15_dropout.py [--backend torch] [--epochs 10001] [--plot regions.png]
"""

import portnn as pn
from portnn.nnfs import (
    Accuracy_Categorical,
    Activation_ReLU,
    Activation_Softmax_Loss_CategoricalCrossentropy,
    Layer_Dense,
    Layer_Dropout,
    Optimizer_Adam,
    init,
    spiral_data,
)
from portnn.scripts import example_parser, parse_example, run_script


def main() -> None:
    args = parse_example(example_parser("The book's chapter 15 run (dropout).", epochs=10001))
    xp = pn.get_backend().xp

    accuracy = Accuracy_Categorical()

    init()
    X, y = spiral_data(samples=1000, classes=3)
    dense1 = Layer_Dense(2, 512, weight_regularizer_l2=5e-4, bias_regularizer_l2=5e-4)
    activation1 = Activation_ReLU()
    dropout1 = Layer_Dropout(0.1)
    dense2 = Layer_Dense(512, 3)
    loss_activation = Activation_Softmax_Loss_CategoricalCrossentropy()
    optimizer = Optimizer_Adam(learning_rate=0.05, decay=5e-5)

    for epoch in range(1, args.epochs + 1):
        dense1.forward(X)
        activation1.forward(dense1.output)
        dropout1.forward(activation1.output)
        dense2.forward(dropout1.output)
        data_loss = loss_activation.forward(dense2.output, y)

        if not epoch % args.print_every or epoch == args.epochs:
            penalty = loss_activation.loss.regularization_loss  # of one layer's L1/L2 terms
            regularization_loss = penalty(dense1) + penalty(dense2)
            acc = accuracy.calculate(xp.argmax(loss_activation.output, axis=1), y)
            print(
                f"epoch: {epoch}, acc: {acc:.3f}, "
                f"loss: {data_loss + regularization_loss:.3f} (data_loss: {data_loss:.3f}, "
                f"reg_loss: {regularization_loss:.3f}), lr: {optimizer.current_learning_rate}"
            )

        loss_activation.backward(loss_activation.output, y)
        dense2.backward(loss_activation.dinputs)
        dropout1.backward(dense2.dinputs)
        activation1.backward(dropout1.dinputs)
        dense1.backward(activation1.dinputs)

        optimizer.pre_update_params()
        optimizer.update_params(dense1)
        optimizer.update_params(dense2)
        optimizer.post_update_params()

    # Validate without dropout, as the book does: its validation pass skips the dropout layer.
    X_test, y_test = spiral_data(samples=100, classes=3)
    dense1.forward(X_test)
    activation1.forward(dense1.output)
    dense2.forward(activation1.output)
    loss = loss_activation.forward(dense2.output, y_test)
    acc = accuracy.calculate(xp.argmax(loss_activation.output, axis=1), y_test)
    print(f"validation, acc: {acc:.3f}, loss: {loss:.3f}")

    if args.plot:
        from portnn.plot import plot_decision_regions

        network = pn.Model([dense1, activation1, dropout1, dense2, pn.Softmax()])  # no dropout
        print(
            "saved", plot_decision_regions(network, X_test, y_test, args.plot, title="chapter 15")
        )


if __name__ == "__main__":
    run_script(main)  # errors in one line, as the portnn command reports them
