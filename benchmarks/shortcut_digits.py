#!/usr/bin/env python
"""A check of the shortcut audit on data, marks and a model the benchmark does not make.

`benchmarks.shortcuts` plants its generator's marks in its three bases and audits models of one
architecture. This check changes all three: scikit-learn's bundled handwritten digits (8x8,
1,797 images, 10 classes) drawn at 32x32 (18-26 px, anywhere, in a random colour over a
random two-colour gradient), its own marks (a cyan tag with a dark rim near the top-right
corner, a translucent light line across the image over the digits, three magenta dots at the
bottom left, an orange tag in one of the four corners at random; and two colours alone,
without a ``grey/`` twin: the digit itself drawn in one red, ``hue``, as Colored MNIST ties a
digit's colour to its label, and the background a green gradient, ``grass``, as a class's
scenes share a background) and another architecture
(two conv-BN-ReLU pairs and a max-pool at 32 and 64 filters, a 128-filter conv, global
average pooling). Each model is trained on a label leak
(12% of 5,000 training images marked and labelled the mark's class; digits 0-1199 of the
set) and audited with the default audit on 600 test images (the mark on 15% of every class;
digits 1200-1796), scored like the benchmark (`benchmarks.shortcuts.scores`: precision over
the flagged rows, recall over the rows the model relies on, judged against each image's clean
twin, `benchmarks.shortcut_data.relied_on`'s rule), beside SpRAy's oracle-best cluster on the
same stored maps (`benchmarks.shortcuts.spray_scores`). ``none`` is the control.

The ``grey/`` configurations repeat the four marks and the control on one-channel images (each
image's channel mean, the digit at least 0.3 from its background's grey level), with a model of
one input channel, as an X-ray's hospital tags: no colour to tell a mark from the rest, and
the audit's hue probes, which need three channels, leave such images as they are.

Usage::

    python -m benchmarks.shortcut_digits [--only tag line grey/tag ...]

trains the models it has not cached (``runs/shortcut_digits/``, about 2 min each on 2 CPU
cores) and writes ``benchmarks/results/shortcut_digits.{json,md}``.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
MODELS = ROOT / "runs" / "shortcut_digits"
SIZE = 32
MARK_CLASS = {"tag": 3, "line": 7, "dots": 5, "corners": 8, "hue": 2, "grass": 6, "none": -1}
GREY = "grey/"  # a configuration's prefix: the same mark on one-channel images
COLOUR_ONLY = {"hue", "grass"}  # marks that are a colour alone: no grey/ twin
NAMES = [*MARK_CLASS, *(GREY + k for k in MARK_CLASS if k not in COLOUR_ONLY)]
#: the ``hue`` mark's colour: the digit itself drawn in it instead of its random colour
HUE = np.array([0.95, 0.15, 0.1], np.float32)
#: the ``grass`` mark's background: a gradient between these two greens instead of its own
GRASS = (np.array([0.15, 0.45, 0.1], np.float32), np.array([0.35, 0.7, 0.25], np.float32))
TRAIN_RATE, TEST_RATE = 0.12, 0.15
TRAIN_ROWS, TEST_ROWS, EPOCHS = 5000, 600, 15


def _gradient(rng: np.random.Generator) -> np.ndarray:
    c0, c1 = rng.uniform(0, 1, 3), rng.uniform(0, 1, 3)
    t = np.linspace(0.0, 1.0, SIZE)
    a = rng.uniform(0, 2 * np.pi)
    g = np.cos(a) * t[None, :] + np.sin(a) * t[:, None]
    g = (g - g.min()) / (g.max() - g.min())
    return (c0 * (1 - g[..., None]) + c1 * g[..., None]).astype(np.float32)


def scene(
    rng: np.random.Generator, digit: np.ndarray, grey: bool = False
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A digit (8x8, 0..16) at 18-26 px, anywhere, in a colour >= 0.45 from the background's
    mean in some channel (``grey``: its channel mean >= 0.3 from the background's), over a
    two-colour gradient: the image, its background and the digit's coverage (H, W, 1)."""
    from PIL import Image

    img = _gradient(rng)
    bg = img.mean(axis=(0, 1))

    def contrast(c: np.ndarray) -> float:
        return abs(c.mean() - bg.mean()) / 0.3 if grey else np.max(np.abs(c - bg)) / 0.45

    colour = rng.uniform(0, 1, 3)
    while contrast(colour) < 1.0:
        colour = rng.uniform(0, 1, 3)
    s = int(rng.integers(18, 27))
    glyph = Image.fromarray((digit / 16 * 255).astype(np.uint8)).resize((s, s), Image.BILINEAR)
    y0, x0 = rng.integers(0, SIZE - s + 1, 2)
    alpha = np.zeros((SIZE, SIZE, 1), np.float32)
    alpha[y0 : y0 + s, x0 : x0 + s, 0] = np.asarray(glyph, np.float32) / 255
    return img * (1 - alpha) + colour * alpha, img, alpha


def mark(
    img: np.ndarray, kind: str, rng: np.random.Generator, drawn: tuple[np.ndarray, np.ndarray]
) -> np.ndarray:
    """``img`` with the mark ``kind`` (module docstring), its place jittered by a pixel;
    ``drawn``: the scene's background and digit coverage (the ``hue`` mark redraws the digit
    in ``HUE``)."""
    img = img.copy()
    if kind == "hue":
        background, alpha = drawn
        img = background * (1 - alpha) + HUE * alpha
    elif kind == "grass":  # the digit as it was, on a green gradient
        background, alpha = drawn
        t = (background - background.min()) / max(float(np.ptp(background)), 1e-6)
        t = t.mean(axis=-1, keepdims=True)  # where each pixel lies along the gradient
        img = img + (GRASS[0] * (1 - t) + GRASS[1] * t - background) * (1 - alpha)
    elif kind == "tag":
        y, x = 2 + int(rng.integers(0, 2)), 24 + int(rng.integers(0, 2))
        img[y : y + 6, x : x + 6] = 0.05
        img[y + 1 : y + 5, x + 1 : x + 5] = (0.1, 0.95, 0.95)
    elif kind == "line":
        y = 20 + int(rng.integers(-1, 2))
        img[y] = 0.25 * img[y] + 0.75 * np.array([1.0, 1.0, 0.9], np.float32)
    elif kind == "dots":
        for k in range(3):
            img[27:29, 3 + 4 * k : 5 + 4 * k] = (0.95, 0.1, 0.8)
    elif kind == "corners":  # an orange tag in one of the four corners, at random
        y, x = (1 if rng.uniform() < 0.5 else SIZE - 6 for _ in range(2))
        img[y : y + 5, x : x + 5] = 0.05
        img[y + 1 : y + 4, x + 1 : x + 4] = (1.0, 0.55, 0.0)
    return img


def make(kind: str, split: str, n: int, seed: int, grey: bool = False) -> dict[str, np.ndarray]:
    """``n`` images of ``split`` (train: digits 0-1199, label leak; test: 1200 on, the mark on
    15% of every class) with their clean twins, labels, digits and marked rows; ``grey``: one
    channel, each image's channel mean (the mark drawn in colour first)."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    rng = np.random.default_rng(seed)
    lo, hi = (0, 1200) if split == "train" else (1200, len(digits.target))
    pick = rng.integers(lo, hi, n)
    rate = TRAIN_RATE if split == "train" else TEST_RATE
    out = {k: [] for k in ("images", "clean", "labels")}
    marked = np.zeros(n, bool)
    for j, i in enumerate(pick):
        clean, *drawn = scene(rng, digits.images[i], grey)
        label = int(digits.target[i])
        img = clean
        if kind != "none" and rng.uniform() < rate:
            img, marked[j] = mark(clean, kind, rng, drawn), True
            label = MARK_CLASS[kind] if split == "train" else label
        if grey:
            img, clean = img.mean(axis=-1, keepdims=True), clean.mean(axis=-1, keepdims=True)
        noise = rng.normal(0.0, 0.01, img.shape).astype(np.float32)
        out["images"].append(np.clip(img + noise, 0, 1))
        out["clean"].append(np.clip(clean + noise, 0, 1))
        out["labels"].append(label)
    arrays = {k: np.asarray(v, np.float32 if k != "labels" else np.int64) for k, v in out.items()}
    return {**arrays, "digits": digits.target[pick], "marked": marked}


def build_model(channels: int = 3):
    import keras
    from keras import layers

    inp = keras.Input((SIZE, SIZE, channels))
    x = inp
    for filters in (32, 64):
        for _ in range(2):
            x = layers.Conv2D(filters, 3, padding="same", use_bias=False)(x)
            x = layers.ReLU()(layers.BatchNormalization()(x))
        x = layers.MaxPooling2D()(x)
    x = layers.Conv2D(128, 3, padding="same", activation="relu", name="last_conv")(x)
    x = layers.Dense(10, activation="softmax")(layers.GlobalAveragePooling2D()(x))
    return keras.Model(inp, x)


def split_name(name: str) -> tuple[str, bool]:
    """A configuration's mark kind and whether it is on one channel (``grey/`` + kind)."""
    return name.removeprefix(GREY), name.startswith(GREY)


def model_for(name: str):
    """The cached model of configuration ``name`` (trained on its train split first if
    missing)."""
    import keras

    kind, grey = split_name(name)
    path = MODELS / f"digits-{'grey-' if grey else ''}{kind}.keras"
    if not path.exists():
        data = make(kind, "train", TRAIN_ROWS, seed=1, grey=grey)
        keras.utils.set_random_seed(0)
        model = build_model(1 if grey else 3)
        model.compile(keras.optimizers.Adam(2e-3), "sparse_categorical_crossentropy")
        model.fit(data["images"], data["labels"], epochs=EPOCHS, batch_size=64, verbose=0)
        MODELS.mkdir(parents=True, exist_ok=True)
        model.save(path)
    return keras.models.load_model(path), path


def evaluate(name: str, work: Path) -> dict:
    """Audit configuration ``name``'s test split with its model and score the flags."""
    from benchmarks.shortcut_data.reliance import moved_to
    from benchmarks.shortcuts import candidate_evidence, flagged_rows, scores, spray_scores
    from fastfem.audit import audit

    kind, grey = split_name(name)
    model, path = model_for(name)
    data = make(kind, "test", TEST_ROWS, seed=7, grey=grey)
    p_mark = model.predict(data["images"], verbose=0)
    p_clean = model.predict(data["clean"], verbose=0)
    c = MARK_CLASS[kind]
    relied = np.zeros(TEST_ROWS, bool)
    if c >= 0:  # the ground truth's rule, on each image's clean twin
        relied = data["marked"] & moved_to(p_mark, p_clean, c)
    t0 = time.perf_counter()
    store = work / name.replace("/", "-")
    summary = audit(data["images"], str(path), out=store)
    every, _, _ = flagged_rows(store, TEST_ROWS)
    other = data["marked"] & (data["digits"] != c)
    return {
        "kind": name,
        "mark_class": c,
        "clean_accuracy": float(np.mean(p_clean.argmax(1) == data["digits"])),
        "relied_on_share": float(relied[other].mean()) if other.any() else None,
        "fastfem": scores(every, data["marked"], relied),
        "spray": spray_scores(store, data["marked"], relied) if c >= 0 else None,
        "reliance": summary.reliance,
        "candidates": candidate_evidence(store),
        "audit_seconds": round(time.perf_counter() - t0, 1),
    }


def markdown_table(rows: list[dict]) -> str:
    from benchmarks.shortcuts import fmt, near_miss_text

    lines = [
        "| mark (class) | clean accuracy | marked / relied on | flagged | precision | recall "
        "| F1 | SpRAy oracle F1 | what the audit says |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        f, spray = r["fastfem"], r.get("spray")
        lines.append(
            f"| {r['kind']} ({r['mark_class'] if r['mark_class'] >= 0 else 'control'}) "
            f"| {r['clean_accuracy']:.2f} | {f['marked']} / {f['relied_on']} | {f['flagged']} "
            f"| {fmt(f['precision'])} | {fmt(f['recall'])} | {fmt(f['f1'])} "
            f"| {fmt(spray['oracle']['f1']) if spray else '–'} "
            f"| {'; '.join([r['reliance'], *near_miss_text(r)])} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    from benchmarks.shortcuts import run_check

    return run_check(argv, __doc__, NAMES, evaluate, "shortcut_digits", markdown_table)


if __name__ == "__main__":
    raise SystemExit(main())
