"""A small mutation harness: plant one known bug at a time and check that a test fails.

Each mutation replaces one exact snippet of portnn's source. For each, the harness copies
the working tree's ``portnn/``, ``tests/`` and ``pyproject.toml`` once into a temporary
directory (the tree itself is never touched), writes the mutated file there, runs
``pytest -x -q`` on the mutation's test files with ``PORTNN_BACKEND`` set, restores the
file, and reports whether a test caught the bug. Every snippet must occur exactly once in
the current source: one that does not is reported as stale (the code moved on; adapt the
table) before anything runs.

    python benchmarks/mutants.py                     # every mutation, NumPy
    python benchmarks/mutants.py --list              # the table
    python benchmarks/mutants.py --only relu-derivative-at-zero,shuffle-x-only
    python benchmarks/mutants.py --tests tests/test_train_loop.py   # only these test files

Exit status: 0 when every mutation is caught, 1 when one survives, 2 when a snippet is stale
or the unmutated tests fail.
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
COPIED = ("portnn", "tests", "pyproject.toml")

LOOP = ("tests/test_train_loop.py", "tests/test_model.py")
CALLBACKS = ("tests/test_callbacks.py",)
IO = ("tests/test_io.py",)
MODEL = ("tests/test_model.py",)
CLI = ("tests/test_cli.py",)
CNN = ("tests/test_cnn_kernels.py", "tests/test_normalization.py", "tests/test_conv.py")
UNITS = (
    "tests/test_activations.py",
    "tests/test_layers.py",
    "tests/test_losses.py",
    "tests/test_metrics.py",
    "tests/test_optimizers.py",
    "tests/test_train_loop.py",
)


@dataclass(frozen=True)
class Mutation:
    name: str
    file: str
    snippet: str
    replacement: str
    description: str
    tests: tuple[str, ...] = UNITS


MUTATIONS = [
    # --- the training loop ----------------------------------------------------------------
    Mutation(
        "train-forward-not-training",
        "portnn/step.py",
        "x, context = layer.apply(p, x, True, draw)",
        "x, context = layer.apply(p, x, False, draw)",
        "Model.train runs its forward pass without training=True (Dropout never acts)",
        LOOP,
    ),
    Mutation(
        "shuffle-order-drawn-once",
        "portnn/training.py",
        "order = self._permutation(X.shape[0], b)",
        "order = self._order = self._order if epoch > 1 else self._permutation(X.shape[0], b)",
        "the shuffle order is drawn in the first epoch and reused by every later one",
        LOOP,
    ),
    Mutation(
        "shuffle-x-only",
        "portnn/training.py",
        "xp.take(y, rows, axis=0)",
        "y[s, ...]",
        "shuffling gathers X by the permutation but takes y in its original order",
        LOOP,
    ),
    Mutation(
        "regularization-loss-of-first-batch",
        "portnn/training.py",
        "if i == len(self.batches) - 1:",
        "if i == 0:",
        "the history's regularization loss is the epoch's first batch's, not its last",
        LOOP,
    ),
    Mutation(
        "evaluate-resets-regression-precision",
        "portnn/model.py",
        "self.accuracy.init(y)\n        with quiet_float_errors(X):",
        "self.accuracy.init(y, reinit=True)\n        with quiet_float_errors(X):",
        "evaluate() refits RegressionAccuracy's precision to the evaluated targets",
        LOOP,
    ),
    Mutation(
        "evaluate-in-training-mode",
        "portnn/training.py",
        "model.forward(X[s, ...])",
        "model.forward(X[s, ...], training=True)",
        "evaluate() and the validation figures run Dropout as in training",
        LOOP,
    ),
    Mutation(
        "predict-in-training-mode",
        "portnn/model.py",
        "outputs = [self.forward(X[s, ...]) for s in",
        "outputs = [self.forward(X[s, ...], training=True) for s in",
        "predict() runs Dropout as in training",
        LOOP,
    ),
    # --- convolutional layers: NumPy's numba kernels and the portable code they stand in for
    Mutation(
        "bn-kernel-unbiased-batch-variance",
        "portnn/backend/_numba_cnn.py",
        "var[k] = part2[:, k].sum() / m",
        "var[k] = part2[:, k].sum() / (m - 1)",
        "NumPy's BatchNormalization kernel normalises by the unbiased variance (torch: biased)",
        CNN,
    ),
    Mutation(
        "max-pool-kernel-last-of-ties",
        "portnn/backend/_numba_cnn.py",
        "if v > out[s, p, q, k] or v != v:",
        "if v >= out[s, p, q, k] or v != v:",
        "NumPy's max pooling kernel sends a tied window's gradient to its last maximum",
        CNN,
    ),
    Mutation(
        "col2im-kernel-drops-the-last-offset",
        "portnn/backend/_numba_cnn.py",
        "dx[s, y, z, k] += d[s, p, q, i, j, k]",
        "dx[s, y, z, k] += d[s, p, q, i, j, k] * (i + j < kh + kw - 2)",
        "NumPy's col2im kernel never adds back the kernel's bottom-right offset",
        CNN,
    ),
    Mutation(
        "bn-portable-backward-without-mean-term",
        "portnn/normalization.py",
        "return a * dvalues + b * centered + c, grads",
        "return a * dvalues + b * centered, grads",
        "BatchNormalization's portable backward forgets the gradient through the batch mean",
        CNN,
    ),
    # --- activations --------------------------------------------------------------------
    Mutation(
        "relu-derivative-at-zero",
        "portnn/activations.py",
        "xp.astype(context > 0, dvalues.dtype)",
        "xp.astype(context >= 0, dvalues.dtype)",
        "ReLU's backward passes dvalues at exactly 0 (the book zeroes where x <= 0)",
    ),
    Mutation(
        "leaky-relu-derivative-at-zero",
        "portnn/activations.py",
        "xp.where(context > 0, dvalues, self.alpha * dvalues)",
        "xp.where(context >= 0, dvalues, self.alpha * dvalues)",
        "LeakyReLU's backward takes the slope 1 at exactly 0",
    ),
    Mutation(
        "softmax-predictions-argmax-axis-0",
        "portnn/activations.py",
        "argmax(outputs, axis=1)",
        "argmax(outputs, axis=0)",
        "Softmax predictions take the argmax over samples instead of classes",
    ),
    Mutation(
        "sigmoid-backward-sign",
        "portnn/activations.py",
        "dvalues * (1 - context) * context",
        "dvalues * (context - 1) * context",
        "Sigmoid's backward has its sign flipped",
    ),
    # --- metrics ------------------------------------------------------------------------
    Mutation(
        "one-hot-labels-argmax-axis-0",
        "portnn/metrics.py",
        "y = xp.argmax(y, axis=1)",
        "y = xp.argmax(y, axis=0)",
        "CategoricalAccuracy turns one-hot labels into classes over the wrong axis",
    ),
    # --- losses -------------------------------------------------------------------------
    Mutation(
        "fused-backward-without-1/N",
        "portnn/losses.py",
        "return (output - _one_hot_rows(y_true, output)) / output.shape[0]",
        "return output - _one_hot_rows(y_true, output)",
        "the fused softmax + cross-entropy backward is the sum's gradient, not the mean's",
    ),
    Mutation(
        "mse-backward-without-1/N",
        "portnn/losses.py",
        "copy=False) - dvalues) / outputs / n",
        "copy=False) - dvalues) / outputs",
        "mean squared error's backward forgets to divide by the number of samples",
    ),
    Mutation(
        "bce-backward-without-1/N",
        "portnn/losses.py",
        "-(y / c - (1 - y) / (1 - c)) / outputs / n",
        "-(y / c - (1 - y) / (1 - c)) / outputs",
        "binary cross-entropy's backward forgets to divide by the number of samples",
    ),
    Mutation(
        "mae-backward-sign",
        "portnn/losses.py",
        "xp.sign(dvalues - xp.astype(y_true, dvalues.dtype, copy=False))",
        "xp.sign(xp.astype(y_true, dvalues.dtype, copy=False) - dvalues)",
        "mean absolute error's backward with the sign flipped (the book's own slip)",
    ),
    # --- layers -------------------------------------------------------------------------
    Mutation(
        "l2-gradient-sign",
        "portnn/layers.py",
        "dweights = dweights + 2 * layer.weight_regularizer_l2 * weights",
        "dweights = dweights - 2 * layer.weight_regularizer_l2 * weights",
        "the L2 weight penalty's gradient pushes weights away from 0",
    ),
    Mutation(
        "dropout-not-inverted",
        "portnn/layers.py",
        "xp.astype(draw < keep, inputs.dtype) / keep",
        "xp.astype(draw < keep, inputs.dtype)",
        "Dropout drops without scaling the kept values by 1 / (1 - rate)",
    ),
    Mutation(
        "dropout-keeps-its-first-mask",
        "portnn/layers.py",
        "draw = random.uniform(shape, backend_of(inputs))",
        'draw = self.__dict__.setdefault("_draw", random.uniform(shape, backend_of(inputs)))',
        "Dropout draws one mask and reuses it on every later batch",
    ),
    Mutation(
        "dense-output-shape-unchecked",
        "portnn/layers.py",
        "if len(input_shape) != 2 or input_shape[-1] not in (None, self.n_inputs):",
        "if len(input_shape) != 2:",
        "Dense says it takes inputs of any width: a model whose sizes do not chain is built",
        ("tests/test_layers.py", "tests/test_model.py"),
    ),
    Mutation(
        "model-outputs-from-the-first-layer",
        "portnn/model.py",
        "return self.shapes()[-1][-1] if self.layers else None",
        "return self.shapes()[0][-1] if self.layers else None",
        "the model's output width is its first layer's",
        ("tests/test_layers.py", "tests/test_model.py"),
    ),
    # --- optimizers ---------------------------------------------------------------------
    Mutation(
        "adam-bias-correction-one-step-late",
        "portnn/optimizers.py",
        "t = self.beta_1, self.beta_2, self.iterations + 1",
        "t = self.beta_1, self.beta_2, self.iterations + 2",
        "Adam corrects its moments with 1 - beta ** (iterations + 2)",
    ),
    Mutation(
        "sgd-momentum-sign",
        "portnn/optimizers.py",
        "m = self.momentum * state.momentum - lr * grad",
        "m = -self.momentum * state.momentum - lr * grad",
        "SGD momentum subtracts the previous update instead of keeping it",
    ),
    Mutation(
        "decay-one-step-late",
        "portnn/schedules.py",
        "learning_rate / (1.0 + self.decay * iterations)",
        "learning_rate / (1.0 + self.decay * (iterations + 1))",
        "learning-rate decay counts one step too many",
    ),
    # --- the training step (portnn.step) ------------------------------------------------
    Mutation(
        "compiled-step-kept-after-a-setting-changes",
        "portnn/training.py",
        'repr([(p.get_config(), getattr(p, "compute_dinputs", None)) for p in parts]),',
        '"",',
        "train() reuses a compiled step after Dropout's rate changed (a traced constant)",
        ("tests/test_step.py",),
    ),
    Mutation(
        "compiled-step-takes-python-floats",
        "portnn/step.py",
        "        if not self.compiled:\n            return values",
        "        if True:\n            return values",
        "a compiled step takes its learning rate as a Python float (a compiler would freeze it)",
        ("tests/test_step.py",),
    ),
    Mutation(
        "donation-misses-a-holder",
        "portnn/step.py",
        "return _most_references(held) <= _ALONE + 2 and",
        "return _most_references(held) <= _ALONE + 3 and",
        "a compiled step on JAX consumes (deletes) arrays someone else still holds",
        ("tests/test_step.py",),
    ),
    Mutation(
        "donated-snapshot-not-copied",
        "portnn/_state.py",
        "    if not model.backend.donates:\n        return state",
        "    if True:\n        return state",
        "the state kept to restore (on divergence, the best epoch) is what the next step deletes",
        ("tests/test_step.py",),
    ),
    # --- callbacks (Keras' counting, path templates) -------------------------------------
    Mutation(
        "early-stopping-patience-off-by-one",
        "portnn/callbacks.py",
        "if self.wait >= self.patience and epoch > 1:",
        "if self.wait > self.patience and epoch > 1:",
        "EarlyStopping stops after patience + 1 epochs without improvement, not Keras' patience",
        CALLBACKS,
    ),
    Mutation(
        "early-stopping-stops-after-epoch-1",
        "portnn/callbacks.py",
        "self.wait >= self.patience and epoch > 1:",
        "self.wait >= self.patience:",
        "EarlyStopping may stop after the first epoch (a NaN first figure), which Keras never does",
        CALLBACKS,
    ),
    Mutation(
        "early-stopping-improvement-keeps-wait",
        "portnn/callbacks.py",
        "self.best, self.best_epoch, self.wait = value, epoch, 0",
        "self.best, self.best_epoch = value, epoch",
        "EarlyStopping does not restart its count at an improvement",
        CALLBACKS,
    ),
    Mutation(
        "early-stopping-stopped-epoch-wrong",
        "portnn/callbacks.py",
        "self.stopped_epoch = epoch",
        "self.stopped_epoch = epoch - 1",
        "EarlyStopping.stopped_epoch names the epoch before the one it stopped after",
        CALLBACKS,
    ),
    Mutation(
        "restore-best-condition-inverted",
        "portnn/callbacks.py",
        "self.best_epoch != run.last_epoch",
        "self.best_epoch == run.last_epoch",
        "restore_best restores only when the best epoch is the last (a no-op), never otherwise",
        CALLBACKS,
    ),
    Mutation(
        "restore-best-flag-ignored",
        "portnn/callbacks.py",
        "            if self.restore_best:\n",
        "            if True:\n",
        "EarlyStopping restores the best epoch even with restore_best=False",
        CALLBACKS,
    ),
    Mutation(
        "min-delta-sign-min",
        "portnn/callbacks.py",
        "value + self.min_delta < self.best",
        "value - self.min_delta < self.best",
        "mode min: a figure worse by less than min_delta counts as an improvement",
        CALLBACKS,
    ),
    Mutation(
        "min-delta-not-strict-min",
        "portnn/callbacks.py",
        "value + self.min_delta < self.best",
        "value + self.min_delta <= self.best",
        "mode min: an equal figure, or one better by exactly min_delta, counts as an improvement",
        CALLBACKS,
    ),
    Mutation(
        "min-delta-sign-max",
        "portnn/callbacks.py",
        "value - self.min_delta > self.best",
        "value + self.min_delta > self.best",
        "mode max: min_delta added the wrong way",
        CALLBACKS,
    ),
    Mutation(
        "min-delta-not-strict-max",
        "portnn/callbacks.py",
        "value - self.min_delta > self.best",
        "value - self.min_delta >= self.best",
        "mode max: a figure better by exactly min_delta counts as an improvement",
        CALLBACKS,
    ),
    Mutation(
        "nan-first-figure-is-best",
        "portnn/callbacks.py",
        "        if math.isnan(value):\n            return False\n",
        "",
        "a NaN first figure becomes the best, and nothing after it can improve on it",
        CALLBACKS,
    ),
    Mutation(
        "mode-auto-picks-wrong",
        "portnn/callbacks.py",
        '"max" if "accuracy" in monitor else "min"',
        '"min" if "accuracy" in monitor else "max"',
        "mode auto: lower is better for an accuracy, higher for a loss",
        CALLBACKS,
    ),
    Mutation(
        "mode-min-max-swapped",
        "portnn/callbacks.py",
        'if self.mode == "min":',
        'if self.mode == "max":',
        "mode min compares as max and the other way round",
        CALLBACKS,
    ),
    Mutation(
        "reduce-lr-patience-off-by-one",
        "portnn/callbacks.py",
        "if self.wait >= self.patience and opt.learning_rate > self.min_lr:",
        "if self.wait > self.patience and opt.learning_rate > self.min_lr:",
        "ReduceLROnPlateau reduces one epoch later than Keras",
        CALLBACKS,
    ),
    Mutation(
        "reduce-lr-keeps-wait-after-reducing",
        "portnn/callbacks.py",
        "self.cooldown_counter, self.wait = self.cooldown, 0",
        "self.cooldown_counter = self.cooldown",
        "ReduceLROnPlateau does not restart its count after a reduction (reduces every epoch)",
        CALLBACKS,
    ),
    Mutation(
        "reduce-lr-cooldown-off-by-one",
        "portnn/callbacks.py",
        "self.cooldown_counter, self.wait = self.cooldown, 0",
        "self.cooldown_counter, self.wait = self.cooldown + 1, 0",
        "ReduceLROnPlateau's cooldown lasts one epoch longer than Keras'",
        CALLBACKS,
    ),
    Mutation(
        "reduce-lr-cooldown-never-ends",
        "portnn/callbacks.py",
        "self.cooldown_counter -= 1",
        "self.cooldown_counter -= 0",
        "ReduceLROnPlateau's cooldown never counts down: one reduction at most",
        CALLBACKS,
    ),
    Mutation(
        "reduce-lr-improvement-keeps-wait",
        "portnn/callbacks.py",
        "self.best, self.wait = value, 0",
        "self.best = value",
        "ReduceLROnPlateau does not restart its count at an improvement",
        CALLBACKS,
    ),
    Mutation(
        "reduce-lr-min-lr-clamp-swapped",
        "portnn/callbacks.py",
        "max(opt.learning_rate * self.factor, self.min_lr)",
        "min(opt.learning_rate * self.factor, self.min_lr)",
        "ReduceLROnPlateau sets the rate to min(rate * factor, min_lr): straight to the floor",
        CALLBACKS,
    ),
    Mutation(
        "reduce-lr-factor-ignored",
        "portnn/callbacks.py",
        "opt.learning_rate * self.factor",
        "opt.learning_rate * 0.5",
        "ReduceLROnPlateau halves the rate whatever its factor",
        CALLBACKS,
    ),
    Mutation(
        "reduce-lr-current-rate-stale",
        "portnn/callbacks.py",
        "                opt.current_learning_rate = opt.learning_rate\n",
        "",
        "without a schedule, the rate the optimizer steps with stays the old one",
        CALLBACKS,
    ),
    Mutation(
        "reduce-lr-schedule-step-off",
        "portnn/callbacks.py",
        "opt.schedule(opt.learning_rate, opt.iterations)",
        "opt.schedule(opt.learning_rate, opt.iterations - 1)",
        "with a schedule, current_learning_rate is the last step's rate, not the next step's",
        CALLBACKS,
    ),
    Mutation(
        "checkpoint-best-inverted",
        "portnn/callbacks.py",
        "if not self._improved(value):",
        "if self._improved(value):",
        "ModelCheckpoint(save_best_only=True) saves the epochs that did not improve",
        CALLBACKS,
    ),
    Mutation(
        "checkpoint-best-not-kept",
        "portnn/callbacks.py",
        "            self.best = value\n",
        "",
        "ModelCheckpoint never records its best, so it saves every epoch",
        CALLBACKS,
    ),
    Mutation(
        "checkpoint-val-fields-unchecked",
        "portnn/callbacks.py",
        "if run.val is None and missing:",
        "if False and missing:",
        "a {val_loss} path in a run without validation fails with a KeyError after an epoch",
        CALLBACKS,
    ),
    Mutation(
        "checkpoint-positional-field-allowed",
        "portnn/callbacks.py",
        "if name not in HISTORY_KEYS:",
        "if name and name not in HISTORY_KEYS:",
        "a path with {} is not refused as a field name",
        CALLBACKS,
    ),
    Mutation(
        "checkpoint-format-spec-unchecked",
        "portnn/callbacks.py",
        'path.format(**{key: 1 if key == "epoch" else 0.5 for key in HISTORY_KEYS})',
        "path.format",
        "a bad format spec in a checkpoint path passes the constructor",
        CALLBACKS,
    ),
    Mutation(
        "checkpoint-epoch-checked-as-float",
        "portnn/callbacks.py",
        '1 if key == "epoch" else 0.5',
        "0.5",
        "the path check formats epoch as a float, refusing {epoch:02d}",
        CALLBACKS,
    ),
    Mutation(
        "history-logger-append-ignored",
        "portnn/callbacks.py",
        "if self._write and not self.append:",
        "if self._write:",
        "HistoryLogger(append=True) empties the file at the start of each train call",
        CALLBACKS,
    ),
    Mutation(
        "history-logger-header-every-row",
        "portnn/callbacks.py",
        "if f.tell() == 0:",
        "if True:",
        "HistoryLogger writes the CSV header before every row",
        CALLBACKS,
    ),
    Mutation(
        "lr-scheduler-epoch-from-0",
        "portnn/callbacks.py",
        "self.schedule(epoch, opt.learning_rate)",
        "self.schedule(epoch - 1, opt.learning_rate)",
        "LearningRateScheduler numbers epochs from 0, not 1 as documented",
        CALLBACKS,
    ),
    # --- files and state dicts ---------------------------------------------------------
    Mutation(
        "npz-trailing-bytes-accepted",
        "portnn/_npz.py",
        "if implied != info.file_size:",
        "if implied > info.file_size:",
        "a .npy member with bytes after its data is accepted (NumPy ignores them)",
        IO,
    ),
    Mutation(
        "npz-missing-bytes-accepted",
        "portnn/_npz.py",
        "if implied != info.file_size:",
        "if implied < info.file_size:",
        "a .npy member shorter than its header implies is accepted",
        IO,
    ),
    Mutation(
        "npz-duplicate-member-accepted",
        "portnn/_npz.py",
        "if len(set(names)) < len(names):",
        "if len(set(names)) > len(names):",
        "a zip holding a member name twice loads (the last copy wins)",
        IO,
    ),
    Mutation(
        "npz-member-dtype-unchecked",
        "portnn/_npz.py",
        "if found.name != dtype:",
        "if found.name < dtype:",
        "a float64 member in a float32 file is cast instead of refused",
        IO,
    ),
    Mutation(
        "npz-member-shape-unchecked",
        "portnn/_npz.py",
        "if shape != shapes[key] or found.name not in FLOATS:",
        "if found.name not in FLOATS:",
        "a member's .npy shape is not checked against the layer",
        IO,
    ),
    Mutation(
        "npz-safetensors-sniff-off-by-one",
        "portnn/_npz.py",
        'if start[8:] == b"{":',
        'if start[7:] == b"{":',
        "a safetensors file is not recognised as one",
        IO,
    ),
    Mutation(
        "npz-fitted-checks-the-source",
        "portnn/_npz.py",
        "if not np.isfinite(cast).all():",
        "if not np.isfinite(array).all():",
        "float64 values beyond float32's range become inf in a float32 model",
        ("tests/test_io.py", "tests/test_interop.py"),
    ),
    Mutation(
        "state-five-part-key-unpacked",
        "portnn/_state.py",
        "if len(parts) != 4:",
        "if len(parts) < 4:",
        "an optimizer key of 5 parts fails with an unpack error",
        MODEL,
    ),
    Mutation(
        "state-index-bound-off-by-one",
        "portnn/_state.py",
        "int(i) >= len(model.layers)",
        "int(i) > len(model.layers)",
        "an optimizer index one past the last layer raises IndexError",
        MODEL,
    ),
    Mutation(
        "state-index-leading-zero",
        "portnn/_state.py",
        '_INDEX = re.compile(r"0|[1-9][0-9]*")',
        '_INDEX = re.compile(r"[0-9]+")',
        "optimizer/02/... is read as layer 2",
        MODEL,
    ),
    Mutation(
        "state-misplaced-keys-ignored",
        "portnn/_state.py",
        "misplaced = [k for k in state if not (isinstance(k, str) and k.startswith(_PREFIXES))]",
        "misplaced = []",
        "keys neither layers/ nor optimizer/ are silently ignored",
        MODEL,
    ),
    Mutation(
        "state-set-before-optimizer-checked",
        "portnn/_state.py",
        "    moved = _checked(model, {k: v for k, v in state.items() "
        'if k.startswith("layers/")})\n',
        "    moved = _checked(model, {k: v for k, v in state.items() "
        'if k.startswith("layers/")})\n    _set(moved)\n',
        "parameters are set before the optimizer state is checked",
        MODEL,
    ),
    Mutation(
        "state-missing-field-unchecked",
        "portnn/_state.py",
        "for f in fields if f not in given]",
        "for f in fields if f not in fields]",
        "a parameter missing one of its optimizer fields is not named",
        MODEL,
    ),
    Mutation(
        "state-one-scalar-checked",
        "portnn/_state.py",
        '    for scalar in _SCALARS:\n        if f"optimizer/{scalar}" not in state:',
        '    for scalar in _SCALARS[:1]:\n        if f"optimizer/{scalar}" not in state:',
        "a missing optimizer/current_learning_rate raises KeyError",
        MODEL,
    ),
    Mutation(
        "state-key-split-swapped",
        "portnn/_state.py",
        "_, i, name, field = parts",
        "_, name, i, field = parts",
        "optimizer keys are split into the wrong parts",
        MODEL,
    ),
    Mutation(
        "state-unknown-field-unchecked",
        "portnn/_state.py",
        "        if field not in fields:\n",
        "        if field not in fields and False:\n",
        "an unknown optimizer field is left to the optimizer's misleading message",
        MODEL,
    ),
    Mutation(
        "npz-safetensors-suffix-case-sensitive",
        "portnn/_npz.py",
        '.lower().endswith(".safetensors")',
        '.endswith(".safetensors")',
        "model.save writes a zip under a .SafeTensors name",
        IO,
    ),
    Mutation(
        "io-save-name-unchecked",
        "portnn/io.py",
        '    path = _npz.checked_name(path, "model.save")\n',
        "",
        "model.save writes portnn's zip under a .safetensors name",
        IO,
    ),
    Mutation(
        "io-parameters-dtype-unchecked",
        "portnn/io.py",
        'shapes, dtype = wanted, _dtype(file.header, path, "header")',
        'shapes, dtype = wanted, file.header.get("dtype")',
        "a parameters file's dtype is not checked",
        IO,
    ),
    Mutation(
        "io-parameters-not-fitted",
        "portnn/io.py",
        "{k: _npz.fitted(path, k, v, target) for k, v in arrays.items() "
        'if k.startswith("layers/")}',
        '{k: v for k, v in arrays.items() if k.startswith("layers/")}',
        "load_parameters casts float64 values beyond float32's range to inf",
        IO,
    ),
    Mutation(
        "io-model-read-as-float32",
        "portnn/io.py",
        "file.read(saved.shapes, saved.dtype)",
        'file.read(saved.shapes, "float32")',
        "Model.load checks members against float32 whatever the header says",
        IO,
    ),
    Mutation(
        "io-metadata-not-loaded",
        "portnn/io.py",
        "    model.metadata = metadata\n",
        "",
        "Model.load gives back no metadata (a resumed run would not know its dataset)",
        ("tests/test_io.py", "tests/test_cli.py"),
    ),
    # --- the command: resume, threads, figures, info --------------------------------------
    Mutation(
        "threads-no-upper-bound",
        "portnn/threads.py",
        "    if n > MAX_THREADS:\n        raise ValueError(",
        "    if False:\n        raise ValueError(",
        "set_num_threads takes any count: 2**31 sets the BLAS pools, then torch overflows",
        ("tests/test_threads.py",),
    ),
    Mutation(
        "cli-threads-no-upper-bound",
        "portnn/cli.py",
        "if n > MAX_THREADS:  # checked here",
        "if False:  # checked here",
        "--threads 100000000000 is no usage error (exit 1 from set_num_threads instead of 2)",
        CLI,
    ),
    Mutation(
        "limit-skips-modules",
        "portnn/threads.py",
        "            importlib.import_module(module)",
        "            pass",
        "threads.limit sets the pools before the dataset's modules (scipy, sklearn) load",
        ("tests/test_cli.py", "tests/test_threads.py"),
    ),
    Mutation(
        "cli-no-dataset-libraries",
        "portnn/cli.py",
        "modules = datasets.LIBRARIES.get(args.dataset, ())",
        "modules = ()",
        "portnn train digits leaves scipy's OpenBLAS and sklearn's OpenMP at their own threads",
        CLI,
    ),
    Mutation(
        "info-catches-import-errors-only",
        "portnn/about.py",
        "        except Exception as exc:  # one broken library leaves the others to report",
        "        except (ImportError, RuntimeError) as exc:",
        "portnn info fails entirely when one backend's library raises another error on import",
        CLI,
    ),
    Mutation(
        "figure-suffix-unchecked",
        "portnn/scripts.py",
        "if suffix not in known:",
        "if False:",
        "--plot out.txt trains and saves, then fails with matplotlib's message",
        CLI,
    ),
    Mutation(
        "resume-ignores-outputs",
        "portnn/recipes.py",
        "if n_outputs is not None and model.n_outputs != n_outputs:",
        "if False:",
        "--resume takes a model with another number of outputs than the dataset's classes",
        ("tests/test_recipes.py", "tests/test_cli.py"),
    ),
    Mutation(
        "resume-ignores-task-kind",
        "portnn/recipes.py",
        "if regression is not None and saved is not None and saved != regression:",
        "if False:",
        "--resume takes a regression's model on classes, or a classifier on sine",
        ("tests/test_recipes.py",),
    ),
    Mutation(
        "resume-ignores-the-dataset",
        "portnn/recipes.py",
        "if trained_on is not None and trained_on != data:",
        "if False:",
        "portnn train vertical --resume spiral.npz resumes on another dataset of the same shapes",
        CLI,
    ),
    Mutation(
        "resume-counts-from-one",
        "portnn/cli.py",
        "done = whole or 0",
        "done = 0",
        "a resumed portnn train numbers its epochs from 1 again",
        CLI,
    ),
    Mutation(
        "resume-ignores-recorded-epochs",
        "portnn/cli.py",
        'recorded = model.metadata.get("epochs")',
        "recorded = None",
        "a resumed run guesses its epochs from the steps though the file records them",
        CLI,
    ),
    Mutation(
        "epochs-done-floor",
        "portnn/recipes.py",
        "return steps // per_epoch if steps % per_epoch == 0 else None",
        "return steps // per_epoch",
        "steps that make no whole epochs of this run's batches are taken as whole epochs",
        ("tests/test_recipes.py", "tests/test_cli.py"),
    ),
    Mutation(
        "plot-validation-label-ignored",
        "portnn/plot.py",
        '(validation_label, _series(history, "val_loss")),',
        '("validation", _series(history, "val_loss")),',
        "plot_history labels the validation loss curve 'validation' whatever it is told",
        ("tests/test_plot.py",),
    ),
    Mutation(
        "cli-plot-says-validation",
        "portnn/cli.py",
        'plot.plot_history(history, args.plot, title=title, validation_label="test")',
        "plot.plot_history(history, args.plot, title=title)",
        "portnn train --plot calls the test split 'validation'",
        CLI,
    ),
    Mutation(
        "cli-lines-say-validation",
        "portnn/cli.py",
        '        validation_label="test",\n',
        "",
        "portnn train's per-epoch lines call the test split 'validation'",
        CLI,
    ),
    Mutation(
        "cli-safetensors-save-unchecked",
        "portnn/cli.py",
        '            _npz.checked_name(args.save, "--save")\n',
        "            pass\n",
        "portnn train --save m.safetensors trains, then fails",
        CLI,
    ),
    # --- the training loop's edges, validation_split, initial_epoch ------------------------
    Mutation(
        "final-finite-check-any",
        "portnn/training.py",
        "if not all(all_finite(p) for pair in parameters for p in pair):",
        "if not any(all_finite(p) for pair in parameters for p in pair):",
        "the last update's check passes unless every parameter went infinite",
        LOOP,
    ),
    Mutation(
        "interrupt-drops-history",
        "portnn/training.py",
        "            self._flush()  # the epochs that completed; the one interrupted is dropped",
        "            pass",
        "Ctrl-C's KeyboardInterrupt carries no history of the epochs waiting to be logged",
        LOOP,
    ),
    Mutation(
        "initial-epoch-ignored",
        "portnn/training.py",
        "for epoch in range(self.initial_epoch + 1, self.epochs + 1):",
        "for epoch in range(1, self.epochs + 1):",
        "initial_epoch does not move the count: a resumed run trains its epochs again from 1",
        LOOP,
    ),
    Mutation(
        "validation-label-ignored",
        "portnn/training.py",
        "book_line(values, self.validation_label)",
        "book_line(values)",
        "the validation line keeps the name 'validation' whatever train is told",
        LOOP,
    ),
    Mutation(
        "split-warning-one-way",
        "portnn/training.py",
        "    if not (only_held or only_train):",
        "    if not only_held:",
        "no warning when the training part has classes the held-out part lacks (the README's case)",
        LOOP,
    ),
    Mutation(
        "stratified-rounds-the-total",
        "portnn/random.py",
        "rng.permutation(members)[: int(round(members.size * fraction))]",
        "rng.permutation(members)[: int(round(members.size * fraction)) + 1]",
        "a stratified split holds out one sample too many of each class",
        LOOP,
    ),
    Mutation(
        "split-ignores-the-seed",
        "portnn/random.py",
        "return np.random.default_rng(None if _seed is None else _seed + 2)",
        "return np.random.default_rng(2)",
        "validation_split's random draw is the same whatever pn.seed says",
        LOOP,
    ),
]


def check_snippets(tree: Path, mutations: list[Mutation]) -> list[str]:
    """One line per mutation whose snippet does not occur exactly once in ``tree``."""
    problems = []
    for m in mutations:
        path = tree / m.file
        if not path.exists():
            problems.append(f"{m.name}: {m.file} does not exist")
            continue
        count = path.read_text().count(m.snippet)
        if count != 1:
            problems.append(
                f"{m.name}: the snippet occurs {count} times in {m.file} (must be once); "
                f"the source changed, adapt the table:\n    {m.snippet!r}"
            )
    return problems


def copy_tree(dest: Path) -> None:
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", ".pytest_cache")
    for name in COPIED:
        src = ROOT / name
        if src.is_dir():
            shutil.copytree(src, dest / name, ignore=ignore)
        else:
            shutil.copy2(src, dest / name)


def environment(tree: Path, backend: str) -> dict[str, str]:
    env = dict(os.environ)
    env["PORTNN_BACKEND"] = backend
    env["PYTHONPATH"] = str(tree)  # the copy, before the editable install of the real tree
    env["PYTHONDONTWRITEBYTECODE"] = "1"  # a mutant of the same size and second: no stale .pyc
    env.pop("PYTEST_ADDOPTS", None)
    return env


def run_pytest(tree: Path, files: tuple[str, ...], backend: str, timeout: float, extra=()):
    """(returncode or None on timeout, seconds, output) of ``pytest -x -q`` on ``files``."""
    cmd = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *extra, *files]
    start = time.perf_counter()
    try:
        done = subprocess.run(
            cmd,
            cwd=tree,
            env=environment(tree, backend),
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired as exc:
        out = exc.stdout or ""
        return None, time.perf_counter() - start, out if isinstance(out, str) else out.decode()
    return done.returncode, time.perf_counter() - start, done.stdout + done.stderr


def first_failure(output: str) -> str:
    found = re.search(r"^(?:FAILED|ERROR) (\S+)", output, re.MULTILINE)
    return found[1] if found else ""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backend", default="numpy")
    parser.add_argument("--only", help="comma-separated mutation names")
    parser.add_argument("--tests", nargs="+", help="run these test files for every mutation")
    parser.add_argument("--timeout", type=float, default=300, help="seconds per pytest run")
    parser.add_argument(
        "--pytest-args",
        default="",
        help='more pytest arguments, one string: "--deselect tests/test_x.py::test_y"',
    )
    parser.add_argument("--list", action="store_true", help="print the table and exit")
    parser.add_argument("--no-baseline", action="store_true", help="skip the unmutated run")
    args = parser.parse_args(argv)

    mutations = MUTATIONS
    if args.only:
        wanted = set(args.only.split(","))
        unknown = wanted - {m.name for m in MUTATIONS}
        if unknown:
            parser.error(f"unknown mutations: {', '.join(sorted(unknown))}")
        mutations = [m for m in MUTATIONS if m.name in wanted]
    if args.list:
        for m in mutations:
            print(f"{m.name:40} {m.file:22} {m.description}")
        return 0

    with tempfile.TemporaryDirectory(prefix="portnn-mutants-") as tmp:
        tree = Path(tmp)
        copy_tree(tree)  # one snapshot: edits made to the real tree meanwhile do not leak in
        stale = check_snippets(tree, mutations)
        if stale:
            print("stale mutations (nothing was run):", *stale, sep="\n  ")
            return 2
        where = subprocess.run(
            [sys.executable, "-c", "import portnn; print(portnn.__file__)"],
            cwd=tree,
            env=environment(tree, args.backend),
            capture_output=True,
            text=True,
        ).stdout.strip()
        if not where.startswith(str(tree)):
            print(f"the copy does not shadow the installed portnn (imported {where!r})")
            return 2

        extra = shlex.split(args.pytest_args)

        def files_of(m: Mutation) -> tuple[str, ...]:
            return tuple(args.tests) if args.tests else m.tests

        if not args.no_baseline:
            every = tuple(dict.fromkeys(f for m in mutations for f in files_of(m)))
            code, seconds, output = run_pytest(tree, every, args.backend, args.timeout, extra)
            if code != 0:
                print(f"the unmutated tests fail ({seconds:.1f} s); fix them first:")
                print(output[-3000:])
                return 2
            print(f"baseline: {len(every)} test files pass unmutated ({seconds:.1f} s)\n")

        print(f"{'mutation':40} {'result':16} {'secs':>6}  first failing test")
        caught = 0
        survivors = []
        for m in mutations:
            path = tree / m.file
            original = path.read_text()
            path.write_text(original.replace(m.snippet, m.replacement, 1))
            try:
                code, seconds, output = run_pytest(
                    tree, files_of(m), args.backend, args.timeout, extra
                )
            finally:
                path.write_text(original)
            if code is None:
                result, failure = "caught (timeout)", ""
            elif code == 0:
                result, failure = "SURVIVED", ""
            elif code == 1:
                result, failure = "caught", first_failure(output)
            else:  # 2: interrupted (e.g. an import error), 3/4: pytest trouble
                result, failure = f"caught (exit {code})", first_failure(output)
            if code == 0:
                survivors.append(m)
            else:
                caught += 1
            print(f"{m.name:40} {result:16} {seconds:6.1f}  {failure}", flush=True)

    print(f"\nscore: {caught}/{len(mutations)} caught")
    for m in survivors:
        print(f"  survived: {m.name}: {m.description} ({m.file})")
    return 0 if not survivors else 1


if __name__ == "__main__":
    sys.exit(main())
