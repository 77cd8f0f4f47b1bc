"""portnn.inference: a saved model loaded with its path checked, and one sample's class with
the model's confidence in it, by the output layer's own rule."""

import numpy as np
import pytest

import portnn as pn
from portnn import inference


def _model(layers):
    model = pn.Model(layers)
    model.set(loss=pn.MeanSquaredError())
    model.finalize()
    return model


def test_softmax_gives_the_argmax_and_its_probability(backend):
    model = _model([pn.Dense(3, 4), pn.Softmax()])
    sample = np.array([[0.3, -1.2, 2.0]], dtype=np.float32)
    outputs, cls, confidence = inference.classify(model, sample)
    expected = np.asarray(pn.to_numpy(model.predict(sample))).reshape(-1)
    np.testing.assert_allclose(outputs, expected, rtol=1e-6)
    assert cls == int(np.argmax(expected)) and confidence == pytest.approx(float(expected.max()))


@pytest.mark.parametrize(("bias", "cls"), [(3.0, 1), (-3.0, 0)])
def test_one_sigmoid_output_is_sure_of_either_class(backend, bias, cls):
    model = _model([pn.Dense(2, 1), pn.Sigmoid()])
    model.layers[0].biases = backend.asarray(np.full((1, 1), bias, dtype=np.float32))
    p = float(pn.to_numpy(model.predict(np.zeros((1, 2), dtype=np.float32)))[0, 0])
    result = inference.classify(model, np.zeros((1, 2), dtype=np.float32))
    assert result.cls == cls
    assert result.confidence == pytest.approx(p if cls else 1 - p) and result.confidence > 0.9


def test_regression_outputs_name_no_class(backend):
    model = _model([pn.Dense(2, 3), pn.Linear()])
    result = inference.classify(model, np.ones((1, 2), dtype=np.float32))
    assert result.cls is None and result.confidence is None and result.outputs.shape == (3,)


def test_load_model_names_a_folder_or_a_missing_file(backend, tmp_path):
    with pytest.raises(IsADirectoryError, match="it is a folder, not a model file"):
        inference.load_model(tmp_path)
    with pytest.raises(FileNotFoundError, match="nope.npz: no such model file"):
        inference.load_model(tmp_path / "nope.npz")
    model = _model([pn.Dense(2, 3), pn.Softmax()])
    model.save(tmp_path / "m.npz")
    loaded = inference.load_model(str(tmp_path / "m.npz"), backend.name)
    assert loaded.n_inputs == 2 and loaded.backend.name == backend.name
