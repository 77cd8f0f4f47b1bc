"""The book's names and usage patterns (portnn.nnfs) on the selected backend."""

import numpy as np
import pytest
from conftest import numpy_of

import portnn as pn
from portnn import nnfs
from portnn.nnfs import (
    Accuracy_Categorical,
    Accuracy_Regression,
    Activation_Linear,
    Activation_ReLU,
    Activation_Sigmoid,
    Activation_Softmax,
    Activation_Softmax_Loss_CategoricalCrossentropy,
    Layer_Dense,
    Layer_Dropout,
    Loss_BinaryCrossentropy,
    Loss_CategoricalCrossentropy,
    Loss_MeanSquaredError,
    Model,
    Optimizer_Adagrad,
    Optimizer_Adam,
    Optimizer_RMSprop,
    Optimizer_SGD,
    init,
    sine_data,
    spiral_data,
    vertical_data,
)

ALIASES = {
    "Layer_Dense": pn.Dense,
    "Layer_Input": pn.Input,
    "Activation_ReLU": pn.ReLU,
    "Activation_Softmax": pn.Softmax,
    "Activation_Sigmoid": pn.Sigmoid,
    "Activation_Linear": pn.Linear,
    "Loss": pn.Loss,
    "Loss_CategoricalCrossentropy": pn.CategoricalCrossentropy,
    "Loss_BinaryCrossentropy": pn.BinaryCrossentropy,
    "Loss_MeanSquaredError": pn.MeanSquaredError,
    "Loss_MeanAbsoluteError": pn.MeanAbsoluteError,
    "Optimizer_SGD": pn.SGD,
    "Optimizer_Adagrad": pn.Adagrad,
    "Optimizer_RMSprop": pn.RMSprop,
    "Optimizer_Adam": pn.Adam,
    "Accuracy_Categorical": pn.CategoricalAccuracy,
    "Accuracy_Regression": pn.RegressionAccuracy,
}
ADAPTED = {
    "Layer_Dropout": pn.Dropout,
    "Activation_Softmax_Loss_CategoricalCrossentropy": pn.SoftmaxCategoricalCrossentropy,
    "Model": pn.Model,
}


def test_all_names_exist_and_alias_portnn():
    assert set(nnfs.__all__) == set(ALIASES) | set(ADAPTED) | {
        "init",
        "spiral_data",
        "vertical_data",
        "sine_data",
    }
    for name, cls in ALIASES.items():
        assert getattr(nnfs, name) is cls, name
    for name, base in ADAPTED.items():
        assert issubclass(getattr(nnfs, name), base), name


def test_init_and_data_follow_the_book(backend):
    init()
    X, y = spiral_data(samples=100, classes=3)
    init()
    X_ref, y_ref = pn.datasets.spiral(100, 3)
    np.testing.assert_array_equal(numpy_of(X), X_ref)
    np.testing.assert_array_equal(numpy_of(y), y_ref)
    assert pn.backend.library_of(X) == backend.name
    assert tuple(X.shape) == (300, 2) and tuple(y.shape) == (300,)
    X, y = vertical_data(samples=50, classes=2)
    assert tuple(X.shape) == (100, 2)
    X, y = sine_data()
    assert tuple(X.shape) == (1000, 1) == tuple(y.shape)
    assert tuple(sine_data(samples=10)[0].shape) == (10, 1)


OPTIMIZERS = {
    "sgd": lambda: Optimizer_SGD(decay=1e-3, momentum=0.9),
    "adagrad": lambda: Optimizer_Adagrad(decay=1e-4),
    "rmsprop": lambda: Optimizer_RMSprop(learning_rate=0.02, decay=1e-5, rho=0.999),
    "adam": lambda: Optimizer_Adam(learning_rate=0.05, decay=5e-7),
}


@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_chapter_10_loop_reduces_the_loss(backend, name):
    init()
    X, y = spiral_data(samples=100, classes=3)
    dense1 = Layer_Dense(2, 64)
    activation1 = Activation_ReLU()
    dense2 = Layer_Dense(64, 3)
    loss_activation = Activation_Softmax_Loss_CategoricalCrossentropy()
    optimizer = OPTIMIZERS[name]()

    losses = []
    for _ in range(101):
        dense1.forward(X)
        activation1.forward(dense1.output)
        dense2.forward(activation1.output)
        losses.append(loss_activation.forward(dense2.output, y))

        loss_activation.backward(loss_activation.output, y)
        dense2.backward(loss_activation.dinputs)
        activation1.backward(dense2.dinputs)
        dense1.backward(activation1.dinputs)

        optimizer.pre_update_params()
        optimizer.update_params(dense1)
        optimizer.update_params(dense2)
        optimizer.post_update_params()

    assert isinstance(losses[0], float)
    assert losses[0] == pytest.approx(np.log(3), abs=1e-3)  # 0.01-scale weights: uniform guess
    assert losses[-1] < losses[0] - 0.04, losses[::20]
    assert optimizer.iterations == 101
    assert tuple(dense1.weights.shape) == (2, 64) and tuple(dense1.dweights.shape) == (2, 64)
    assert tuple(dense2.dbiases.shape) == (1, 3)
    assert tuple(dense2.output.shape) == (300, 3) and tuple(activation1.dinputs.shape) == (300, 64)
    assert tuple(loss_activation.dinputs.shape) == (300, 3)


def test_chapter_9_combined_softmax_and_loss(backend):
    init()
    X, y = spiral_data(samples=20, classes=3)
    dense = Layer_Dense(2, 3)
    dense.forward(X)

    combined = Activation_Softmax_Loss_CategoricalCrossentropy()
    loss = combined.forward(dense.output, y)
    combined.backward(combined.output, y)

    softmax = Activation_Softmax()
    loss_function = Loss_CategoricalCrossentropy()
    softmax.forward(dense.output)
    assert loss == pytest.approx(loss_function.calculate(softmax.output, y), rel=1e-6)
    loss_function.backward(softmax.output, y)
    softmax.backward(loss_function.dinputs)

    probabilities = numpy_of(combined.output)
    np.testing.assert_allclose(probabilities, numpy_of(softmax.output), rtol=1e-6)
    expected = probabilities.copy()
    expected[np.arange(len(expected)), numpy_of(y).astype(int)] -= 1
    np.testing.assert_allclose(numpy_of(combined.dinputs), expected / len(expected), atol=1e-7)
    np.testing.assert_allclose(numpy_of(combined.dinputs), numpy_of(softmax.dinputs), atol=1e-6)


def test_chapter_14_regularization_loss_through_the_combined_loss(backend):
    init()
    dense1 = Layer_Dense(2, 8, weight_regularizer_l2=5e-4, bias_regularizer_l2=5e-4)
    loss_activation = Activation_Softmax_Loss_CategoricalCrossentropy()
    weights = numpy_of(dense1.weights).astype(np.float64)
    expected = 5e-4 * np.sum(weights * weights)
    assert loss_activation.loss.regularization_loss(dense1) == pytest.approx(expected, rel=1e-5)


def test_layer_dropout_drops_by_default_as_in_chapter_15(backend):
    dropout = Layer_Dropout(0.5)
    inputs = backend.asarray(np.ones((200, 50), dtype=np.float32))
    dropped = numpy_of(dropout.forward(inputs))
    assert set(np.unique(dropped)) == {0.0, 2.0}
    np.testing.assert_array_equal(numpy_of(dropout.forward(inputs, training=False)), 1.0)


def test_model_add_set_finalize_train_evaluate_predict(backend, capsys):
    init()
    X, y = spiral_data(samples=100, classes=3)
    X_test, y_test = spiral_data(samples=30, classes=3)
    model = Model()
    model.add(Layer_Dense(2, 64, weight_regularizer_l2=5e-4, bias_regularizer_l2=5e-4))
    model.add(Activation_ReLU())
    model.add(Layer_Dropout(0.1))
    model.add(Layer_Dense(64, 3))
    model.add(Activation_Softmax())
    model.set(
        loss=Loss_CategoricalCrossentropy(),
        optimizer=Optimizer_Adam(learning_rate=0.05, decay=5e-5),
        accuracy=Accuracy_Categorical(),
    )
    model.finalize()
    history = model.train(X, y, validation_data=(X_test, y_test), epochs=40, print_every=20)
    out = capsys.readouterr().out
    assert "epoch: 20, acc: " in out and "validation, acc: " in out
    assert history["loss"][-1] < history["loss"][0]

    loss, accuracy = model.evaluate(X_test, y_test)
    assert capsys.readouterr().out == f"validation, acc: {accuracy:.3f}, loss: {loss:.3f}\n"

    confidences = model.predict(X_test[:5, ...])
    predictions = model.output_layer_activation.predictions(confidences)
    assert tuple(predictions.shape) == (5,)
    assert set(numpy_of(predictions).tolist()) <= {0, 1, 2}


def test_model_parameters_and_files(backend, tmp_path, capsys):
    init()
    X, y = spiral_data(samples=50, classes=3)

    def build():
        model = Model()
        model.add(Layer_Dense(2, 16))
        model.add(Activation_ReLU())
        model.add(Layer_Dense(16, 3))
        model.add(Activation_Softmax())
        model.set(loss=Loss_CategoricalCrossentropy(), optimizer=Optimizer_Adam())
        model.finalize()
        return model

    model = build()
    model.train(X, y, epochs=5, print_every=0)
    expected = numpy_of(model.predict(X))

    # chapter 21: parameters into a second model, by value and through a file
    other = build()
    other.set_parameters(model.get_parameters())
    np.testing.assert_allclose(numpy_of(other.predict(X)), expected, rtol=1e-6)
    model.save_parameters(tmp_path / "params.npz")
    third = build()
    third.load_parameters(tmp_path / "params.npz")
    np.testing.assert_allclose(numpy_of(third.predict(X)), expected, rtol=1e-6)

    # the whole model; Model.load gives the book's Model back
    model.save(tmp_path / "model.npz")
    loaded = Model.load(tmp_path / "model.npz")
    assert type(loaded) is Model
    np.testing.assert_allclose(numpy_of(loaded.predict(X)), expected, rtol=1e-6)
    loaded.evaluate(X, y)
    assert capsys.readouterr().out.startswith("validation, acc: ")


def test_binary_and_regression_models(backend):
    init()
    X, y = spiral_data(samples=50, classes=2)
    y = backend.xp.reshape(y, (-1, 1))  # the book's y.reshape(-1, 1), in Array API spelling
    model = Model()
    for layer in (Layer_Dense(2, 16), Activation_ReLU(), Layer_Dense(16, 1), Activation_Sigmoid()):
        model.add(layer)
    model.set(
        loss=Loss_BinaryCrossentropy(),
        optimizer=Optimizer_Adam(learning_rate=0.01),
        accuracy=Accuracy_Categorical(binary=True),
    )
    model.finalize()
    history = model.train(X, y, epochs=30, print_every=0)
    assert history["loss"][-1] < history["loss"][0]

    X, y = sine_data(samples=200)
    model = Model()
    for layer in (Layer_Dense(1, 16), Activation_ReLU(), Layer_Dense(16, 1), Activation_Linear()):
        model.add(layer)
    model.set(
        loss=Loss_MeanSquaredError(),
        optimizer=Optimizer_Adam(learning_rate=0.005),
        accuracy=Accuracy_Regression(),
    )
    model.finalize()
    history = model.train(X, y, epochs=30, print_every=0)
    assert history["loss"][-1] < history["loss"][0]
    assert model.accuracy.precision == pytest.approx(float(np.std(numpy_of(y))) / 250, rel=1e-4)


def test_a_model_of_the_books_names_saves_and_loads(backend, tmp_path):
    X, y = nnfs.spiral_data(samples=50, classes=3)
    model = nnfs.Model()
    for layer in (nnfs.Layer_Dense(2, 16), nnfs.Activation_ReLU(), nnfs.Layer_Dropout(0.1)):
        model.add(layer)
    model.add(nnfs.Layer_Dense(16, 3))
    model.add(nnfs.Activation_Softmax())
    model.set(loss=nnfs.Loss_CategoricalCrossentropy(), optimizer=nnfs.Optimizer_Adam())
    model.finalize()
    model.train(X, y, epochs=2, print_every=0)
    model.save(tmp_path / "book.npz")
    loaded = nnfs.Model.load(tmp_path / "book.npz")
    assert [type(la).__name__ for la in loaded.layers][2] == "Dropout"
    np.testing.assert_allclose(
        pn.to_numpy(loaded.predict(X)), pn.to_numpy(model.predict(X)), rtol=1e-6
    )
