#!/usr/bin/env python
"""A check of the shortcut audit on kinds of shortcut its thresholds were never tuned on.

Every threshold of the reliance test was set while the benchmark's eleven kinds were being
found (`benchmarks.shortcuts`). This check plants five more
(`benchmarks.shortcut_data.UNSEEN_CONFIGS`), added after those thresholds were fixed and never
used to set one: three image-quality shortcuts of the kind that separates one hospital's or
one camera's images from another's — the whole image out of focus (a Gaussian blur), saved as
a low-quality JPEG, darkened towards its corners (a vignette) — a burnt-in tag in a *random*
corner of each image, and the checker patch at a random place in each image (over the object
too). Each is planted in the benchmark's photographs (96 px) with the benchmark's label leak,
a model is trained on it with the benchmark's recipe and architecture
(`benchmarks.shortcut_models.train_one`), and its test split is audited with the default audit
and scored like the benchmark (`benchmarks.shortcuts.evaluate`: precision over the flagged
rows, recall over the rows the model relies on, SpRAy beside it).

Usage::

    python -m benchmarks.shortcut_unseen [--only blur@whole ...]

trains the models it has not cached (``runs/shortcut_unseen/``, 1-3 min each on 2 CPU cores)
and writes ``benchmarks/results/shortcut_unseen.{json,md}``.
"""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MODELS = ROOT / "runs" / "shortcut_unseen"
BASE = "photos"


def evaluate(name: str, work: Path) -> dict:
    """Audit configuration ``name``'s test split with its model (trained first if not cached)
    and score it like the benchmark (`benchmarks.shortcuts.evaluate_trained`)."""
    from benchmarks.shortcuts import evaluate_trained

    return evaluate_trained(BASE, name, MODELS, work)


def main(argv: list[str] | None = None) -> int:
    from benchmarks.shortcut_data import UNSEEN_CONFIGS
    from benchmarks.shortcuts import markdown_table, run_check

    names = [c.name for c in UNSEEN_CONFIGS]
    return run_check(argv, __doc__, names, evaluate, "shortcut_unseen", markdown_table)


if __name__ == "__main__":
    raise SystemExit(main())
