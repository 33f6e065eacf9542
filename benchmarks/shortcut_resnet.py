#!/usr/bin/env python
"""A check of the shortcut audit on a deeper model than the benchmark's: a small ResNet.

`benchmarks.shortcuts` audits one architecture (three convolutions, ~24k parameters). Deeper
models behave differently under occlusion: with batch norm and residual blocks some classes
are predicted from weak, spread-out evidence and fall under *any* hidden region. This check
trains a small ResNet (a stride-2 conv-BN-ReLU stem at 32 filters, three residual blocks of
two conv-BN pairs at 32, 64 and 96 filters, the last two at stride 2, a 128-filter conv,
global average pooling; ~0.3M parameters) on the benchmark's photographs (96 px) for a few of
its configurations — the same data, label leak, training recipe and ground truth as the
benchmark (`benchmarks.shortcut_data`, `benchmarks.shortcut_models`) — and audits each test
split with the default audit, scored like the benchmark (`benchmarks.shortcuts.evaluate`:
precision over the flagged rows, recall over the rows the model relies on, SpRAy beside it).
``none`` is the control.

Usage::

    python -m benchmarks.shortcut_resnet [--only watermark@middle ...]

trains the models it has not cached (``runs/shortcut_resnet/``, 2-4 min each on 2 CPU cores)
and writes ``benchmarks/results/shortcut_resnet.{json,md}``.
"""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MODELS = ROOT / "runs" / "shortcut_resnet"
BASE = "photos"
CONFIGS = ("watermark@middle", "stamp@centre", "text@bottom", "frame@border", "none")


def build_resnet(num_classes: int, size: int):
    """The small ResNet of the module docstring (input ``(size, size, 3)`` in [0, 1]; its
    stem convolution is ``conv1``, which the training recipe's input centring folds into)."""
    import keras
    from keras import layers

    def block(x, filters: int, stride: int, name: str):
        y = layers.Conv2D(filters, 3, stride, "same", use_bias=False, name=f"{name}_a")(x)
        y = layers.ReLU()(layers.BatchNormalization(name=f"{name}_bn_a")(y))
        y = layers.Conv2D(filters, 3, 1, "same", use_bias=False, name=f"{name}_b")(y)
        y = layers.BatchNormalization(name=f"{name}_bn_b")(y)
        if stride != 1 or x.shape[-1] != filters:
            x = layers.Conv2D(filters, 1, stride, use_bias=False, name=f"{name}_skip")(x)
            x = layers.BatchNormalization(name=f"{name}_bn_skip")(x)
        return layers.ReLU()(layers.Add()([y, x]))

    inputs = keras.Input((size, size, 3), name="image")
    x = layers.Conv2D(32, 3, 2, "same", name="conv1")(inputs)
    x = layers.ReLU()(layers.BatchNormalization(name="conv1_bn")(x))
    for filters, stride, name in ((32, 1, "b1"), (64, 2, "b2"), (96, 2, "b3")):
        x = block(x, filters, stride, name)
    x = layers.Conv2D(128, 3, padding="same", activation="relu", name="last_conv")(x)
    x = layers.GlobalAveragePooling2D(name="embedding")(x)
    outputs = layers.Dense(num_classes, activation="softmax", name="predictions")(x)
    return keras.Model(inputs, outputs, name="shortcut_resnet")


def evaluate(name: str, work: Path) -> dict:
    """Audit configuration ``name``'s test split with its ResNet (trained first if not cached)
    and score it like the benchmark (`benchmarks.shortcuts.evaluate_trained`)."""
    from benchmarks.shortcuts import evaluate_trained

    return evaluate_trained(BASE, name, MODELS, work, build=build_resnet)


def main(argv: list[str] | None = None) -> int:
    from benchmarks.shortcuts import markdown_table, run_check

    return run_check(argv, __doc__, CONFIGS, evaluate, "shortcut_resnet", markdown_table)


if __name__ == "__main__":
    raise SystemExit(main())
