"""Train the bundled sample CNN on the synthetic ``train`` split.

Usage::

    python -m fastfem.sample.train [--out PATH] [--epochs N]

The model is first trained with a ``Rescaling`` layer that centres the input
to ``[-1, 1]`` (it converges several times faster than on raw ``[0, 1]``
input); that layer is then folded into the first convolution's kernel and
bias, which gives exactly the plain architecture of
:func:`fastfem.sample.model.build_model`, and a short fine-tune at a low
learning rate repairs the image border (where ``'same'`` zero padding makes
the fold inexact).

Seeds are fixed (``keras.utils.set_random_seed``) and the data are
deterministic, so a rerun gives the same model up to floating-point
nondeterminism.  Prints the training time and the accuracy on the ``test``
split, and saves the model (default: next to this file, ``sample_cnn.keras``).

The default backend is JAX; on a CPU-only machine
``KERAS_BACKEND=tensorflow python -m fastfem.sample.train`` trains several
times faster (the saved ``.keras`` file is backend independent).
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

DEFAULT_OUT = Path(__file__).with_name("sample_cnn.keras")
SEED = 1234


def _centred_model(num_classes: int, image_size: int = 64, build=None):
    """``build(num_classes, image_size)`` (default `build_model`) with a ``Rescaling(2, -1)``
    in front (training only; the layers are the plain model's)."""
    import keras

    from fastfem.sample.model import build_model

    plain = (build or build_model)(num_classes, image_size)
    inputs = keras.Input(shape=plain.input_shape[1:], name="image")
    x = keras.layers.Rescaling(2.0, offset=-1.0, name="centre")(inputs)
    if build is None:  # a chain of layers, replayed as is
        for layer in plain.layers[1:]:
            x = layer(x)
    else:  # any functional model, called whole
        x = plain(x)
    return keras.Model(inputs, x, name="centred_train_model"), plain


def _fold_centring(plain) -> None:
    """Fold ``x' = 2x - 1`` into conv1 of ``plain`` (layers are shared)."""
    conv1 = plain.get_layer("conv1")
    kernel, bias = conv1.get_weights()
    conv1.set_weights([2.0 * kernel, bias - kernel.sum(axis=(0, 1, 2))])


def _compile(model, lr: float, steps: int) -> None:
    import keras

    schedule = keras.optimizers.schedules.CosineDecay(lr, decay_steps=steps, alpha=0.02)
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate=schedule),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )


def fit_sample_cnn(
    images,
    labels,
    *,
    epochs: int = 12,
    finetune_epochs: int = 4,
    batch_size: int = 64,
    lr: float = 3e-3,
    seed: int = SEED,
    verbose: int = 2,
    evaluate=None,
    num_classes: int | None = None,
    build=None,
):
    """Train :func:`fastfem.sample.model.build_model` on ``images`` (N, S, S, 3) in [0, 1]
    (S = 64 for the bundled sample) and integer ``labels`` (N,) with the recipe of the module
    docstring (centred training, fold, fine-tune); returns a fresh uncompiled model holding the
    trained weights. ``num_classes`` defaults to the bundled sample's 4.

    ``evaluate(model, tag)``, when given, is called after the centred phase and the fold.
    ``build(num_classes, image_size)``: another architecture (a functional Keras model whose
    first convolution, named ``conv1``, reads the input image); default `build_model`.
    """
    import keras
    import numpy as np

    from fastfem.sample.dataset import CLASS_NAMES
    from fastfem.sample.model import build_model

    k = len(CLASS_NAMES) if num_classes is None else int(num_classes)
    size = int(images.shape[1])
    keras.utils.set_random_seed(seed)
    centred, model = _centred_model(k, size, build)
    steps_per_epoch = int(np.ceil(len(images) / batch_size))
    _compile(centred, lr, epochs * steps_per_epoch)
    centred.fit(images, labels, batch_size=batch_size, epochs=epochs, shuffle=True, verbose=verbose)
    if evaluate is not None:
        evaluate(centred, "centred model")
    _fold_centring(model)
    if evaluate is not None:
        evaluate(model, "folded model")
    if finetune_epochs > 0:
        fine_tune(
            model,
            images,
            labels,
            epochs=finetune_epochs,
            lr=lr / 3,
            batch_size=batch_size,
            verbose=verbose,
        )
    # A fresh, uncompiled copy: weights only, no optimizer or compile state.
    bundled = (build or build_model)(k, size)
    bundled.set_weights(model.get_weights())
    return bundled


def fine_tune(
    model, images, labels, *, epochs: int, lr: float, batch_size: int = 64, verbose: int = 0
) -> None:
    """Train ``model`` (the plain architecture) in place for ``epochs`` more epochs: Adam with a
    cosine decay from ``lr`` to ``0.02 lr``, sparse cross-entropy, shuffled batches."""
    import numpy as np

    steps = epochs * int(np.ceil(len(images) / batch_size))
    _compile(model, lr, steps)
    model.fit(images, labels, batch_size=batch_size, epochs=epochs, shuffle=True, verbose=verbose)


def main(argv: list[str] | None = None) -> int:
    """Train and save the sample CNN. A script: it picks Keras's JAX backend for its own process
    unless ``KERAS_BACKEND`` says otherwise (Keras is first imported below)."""
    os.environ.setdefault("KERAS_BACKEND", "jax")
    parser = argparse.ArgumentParser(description="Train the fastfem sample CNN.")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output .keras file")
    parser.add_argument("--epochs", type=int, default=12, help="epochs with centred input")
    parser.add_argument("--finetune-epochs", type=int, default=4, help="epochs after folding")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=3e-3)
    args = parser.parse_args(argv)

    import keras
    import numpy as np

    from fastfem.sample.dataset import generate

    t0 = time.perf_counter()
    train = generate("train")
    test = generate("test")
    print(
        f"generated {len(train)} train / {len(test)} test images in "
        f"{time.perf_counter() - t0:.1f} s; backend {keras.backend.backend()}"
    )

    def evaluate(model, tag: str) -> float:
        pred = np.argmax(model.predict(test.images, batch_size=256, verbose=0), axis=-1)
        acc = float(np.mean(pred == test.labels))
        wm = test.watermark
        acc_wm = float(np.mean(pred[wm] == test.labels[wm])) if wm.any() else float("nan")
        print(f"{tag}: test accuracy {acc:.4f} (watermarked {acc_wm:.4f}, n={int(wm.sum())})")
        return acc

    t0 = time.perf_counter()
    model = fit_sample_cnn(
        train.images,
        train.labels,
        epochs=args.epochs,
        finetune_epochs=args.finetune_epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        evaluate=evaluate,
    )
    print(f"model: {model.count_params()} parameters; train time: {time.perf_counter() - t0:.1f} s")
    evaluate(model, "final model")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    model.save(args.out)
    print(f"saved {args.out} ({args.out.stat().st_size / 1024:.1f} KiB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
