"""Chapter 14: L1/L2 regularization, then a check on unseen data, in the book's code style.

The book's run: the chapter 10 network with L2 5e-4 on the first layer's weights and biases,
Adam(learning_rate=0.02, decay=5e-7), 10,001 full-batch epochs on spiral_data(100, 3), then a
validation pass on a fresh spiral_data(100, 3). The book ends near ``acc: 0.95, loss: 0.22
(data_loss: 0.16, reg_loss: 0.06)`` and ``validation, acc: 0.83``; portnn (float32) ends at
``epoch: 10001, acc: 0.953, loss: 0.216 (data_loss: 0.156, reg_loss: 0.060)`` and
``validation, acc: 0.847, loss: 0.446`` (epochs count from 1 here, from 0 in the book's loop).

    python examples/ch14_l2_regularization.py [--backend torch] [--epochs 10001] [--plot r.png]
"""

import portnn as pn
from portnn.nnfs import (
    Accuracy_Categorical,
    Activation_ReLU,
    Activation_Softmax_Loss_CategoricalCrossentropy,
    Layer_Dense,
    Optimizer_Adam,
    init,
    spiral_data,
)
from portnn.scripts import example_parser, parse_example, run_script


def main() -> None:
    args = parse_example(
        example_parser("The book's chapter 14 run (L2 regularization).", epochs=10001)
    )
    xp = pn.get_backend().xp

    accuracy = Accuracy_Categorical()

    init()
    X, y = spiral_data(samples=100, classes=3)
    dense1 = Layer_Dense(2, 64, weight_regularizer_l2=5e-4, bias_regularizer_l2=5e-4)
    activation1 = Activation_ReLU()
    dense2 = Layer_Dense(64, 3)
    loss_activation = Activation_Softmax_Loss_CategoricalCrossentropy()
    optimizer = Optimizer_Adam(learning_rate=0.02, decay=5e-7)

    for epoch in range(1, args.epochs + 1):
        dense1.forward(X)
        activation1.forward(dense1.output)
        dense2.forward(activation1.output)
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
        activation1.backward(dense2.dinputs)
        dense1.backward(activation1.dinputs)  # adds the L2 penalty's gradient to dweights

        optimizer.pre_update_params()
        optimizer.update_params(dense1)
        optimizer.update_params(dense2)
        optimizer.post_update_params()

    # Validate on data the network has not seen.
    X_test, y_test = spiral_data(samples=100, classes=3)
    dense1.forward(X_test)
    activation1.forward(dense1.output)
    dense2.forward(activation1.output)
    loss = loss_activation.forward(dense2.output, y_test)
    acc = accuracy.calculate(xp.argmax(loss_activation.output, axis=1), y_test)
    print(f"validation, acc: {acc:.3f}, loss: {loss:.3f}")

    if args.plot:
        from portnn.plot import plot_decision_regions

        network = pn.Model([dense1, activation1, dense2, pn.Softmax()])  # the trained layers
        print(
            "saved", plot_decision_regions(network, X_test, y_test, args.plot, title="chapter 14")
        )


if __name__ == "__main__":
    run_script(main)  # errors in one line, as the portnn command reports them
