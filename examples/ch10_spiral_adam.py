"""Chapter 10: the spiral classifier trained with Adam, in the book's own code style.

The book's run: spiral_data(samples=100, classes=3); Dense(2, 64) - ReLU - Dense(64, 3) -
softmax with categorical cross-entropy; Adam(learning_rate=0.05, decay=5e-7); 10,001
full-batch epochs, each ending in the optimizer's three calls. The book printed
``epoch: 10000, acc: 0.967, loss: 0.074, lr: 0.04975126853296942``; portnn (float32, the book's
data and initial weights to float32 rounding) ends at ``epoch: 10001, acc: 0.963, loss: 0.077``
with that lr. Like every example, this one counts epochs from 1 and prints every --print-every
epochs and at the last; the book's loop counts from 0, so its epoch 10000 is epoch 10001 here.

    python examples/ch10_spiral_adam.py [--backend torch] [--epochs 10001] [--plot regions.png]
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
    args = parse_example(example_parser("The book's chapter 10 run (Adam, spiral).", epochs=10001))
    xp = pn.get_backend().xp

    init()  # seed 0: the book's data and initial weights (to float32 rounding)
    X, y = spiral_data(samples=100, classes=3)
    dense1 = Layer_Dense(2, 64)
    activation1 = Activation_ReLU()
    dense2 = Layer_Dense(64, 3)
    loss_activation = Activation_Softmax_Loss_CategoricalCrossentropy()
    optimizer = Optimizer_Adam(learning_rate=0.05, decay=5e-7)

    for epoch in range(1, args.epochs + 1):
        dense1.forward(X)
        activation1.forward(dense1.output)
        dense2.forward(activation1.output)
        loss = loss_activation.forward(dense2.output, y)

        if not epoch % args.print_every or epoch == args.epochs:
            predictions = xp.argmax(loss_activation.output, axis=1)
            accuracy = Accuracy_Categorical().calculate(predictions, y)
            print(
                f"epoch: {epoch}, acc: {accuracy:.3f}, loss: {loss:.3f}, "
                f"lr: {optimizer.current_learning_rate}"
            )

        loss_activation.backward(loss_activation.output, y)
        dense2.backward(loss_activation.dinputs)
        activation1.backward(dense2.dinputs)
        dense1.backward(activation1.dinputs)

        optimizer.pre_update_params()
        optimizer.update_params(dense1)
        optimizer.update_params(dense2)
        optimizer.post_update_params()

    if args.plot:
        from portnn.plot import plot_decision_regions

        network = pn.Model([dense1, activation1, dense2, pn.Softmax()])  # the trained layers
        print("saved", plot_decision_regions(network, X, y, args.plot, title="chapter 10"))


if __name__ == "__main__":
    run_script(main)  # errors in one line, as the portnn command reports them
