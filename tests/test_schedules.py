"""Learning-rate schedules against their formulas, and as an optimizer's schedule."""

import math

import numpy as np
import pytest

import portnn as pn
from portnn.schedules import CosineDecay, InverseTimeDecay, StepDecay


@pytest.mark.parametrize(
    ("schedule", "formula"),
    [
        (InverseTimeDecay(1e-3), lambda lr, t: lr / (1 + 1e-3 * t)),
        (StepDecay(3, 0.5), lambda lr, t: lr * 0.5 ** (t // 3)),
        (
            CosineDecay(10, floor=0.1),
            lambda lr, t: lr * (0.1 + 0.9 * (1 + math.cos(math.pi * min(t, 10) / 10)) / 2),
        ),
    ],
    ids=["inverse-time", "step", "cosine"],
)
def test_schedules_follow_their_formulas(schedule, formula):
    for t in (0, 1, 2, 3, 7, 10, 11, 25):
        assert schedule(0.2, t) == pytest.approx(formula(0.2, t), rel=1e-15)


def test_cosine_ends_at_its_floor_and_stays():
    schedule = CosineDecay(4, floor=0.25)
    assert schedule(2.0, 0) == 2.0
    assert schedule(2.0, 4) == schedule(2.0, 40) == pytest.approx(0.5)


def test_an_optimizer_follows_its_schedule_step_by_step(backend):
    model = pn.Model([pn.Dense(2, 1), pn.Linear()])
    opt = pn.SGD(0.1, schedule=StepDecay(2, 0.5))
    model.set(loss=pn.MeanSquaredError(), optimizer=opt)
    X = np.ones((4, 2), np.float32)
    history = model.train(X, X[:, :1], epochs=5, print_every=None)
    assert history["learning_rate"] == pytest.approx([0.1, 0.1, 0.05, 0.05, 0.025])


def test_decay_is_the_books_inverse_time_schedule():
    assert pn.Adam(0.05, decay=5e-7).schedule == InverseTimeDecay(5e-7)
    assert pn.Adam(0.05).schedule is None
    with pytest.raises(ValueError, match="decay or a schedule, not both"):
        pn.Adam(0.05, decay=1e-3, schedule=StepDecay(10))
    with pytest.raises(TypeError, match="Schedule"):
        pn.SGD(0.1, schedule=lambda lr, t: lr)


@pytest.mark.parametrize(
    ("make", "name"),
    [
        (lambda: StepDecay(0), "step_size"),
        (lambda: StepDecay(3, factor=0.0), "factor"),
        (lambda: CosineDecay(5, floor=1.5), "floor"),
        (lambda: InverseTimeDecay(-1.0), "decay"),
    ],
)
def test_schedules_reject_nonsense(make, name):
    with pytest.raises(ValueError, match=f"^{name} must be"):
        make()


def test_a_schedule_survives_save_and_load(backend, tmp_path):
    model = pn.Model([pn.Dense(2, 1), pn.Linear()])
    model.set(loss=pn.MeanSquaredError(), optimizer=pn.SGD(0.1, schedule=CosineDecay(8, 0.1)))
    X = np.ones((4, 2), np.float32)
    model.train(X, X[:, :1], epochs=3, print_every=None)
    model.save(tmp_path / "m.npz")
    loaded = pn.Model.load(tmp_path / "m.npz")
    assert loaded.optimizer.schedule == CosineDecay(8, 0.1)
    a = model.train(X, X[:, :1], epochs=3, print_every=None)["learning_rate"]
    b = loaded.train(X, X[:, :1], epochs=3, print_every=None)["learning_rate"]
    assert a == b
