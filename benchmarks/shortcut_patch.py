#!/usr/bin/env python
"""A check of the shortcut audit on a mark at a random place in each image, on every base.

The checker patch at a uniformly random place (over the objects too: the generator's
``patch@anywhere``) lies in no fixed region of the sweep; the probe that follows each row's
map peak (`fastfem.audit.reliance.peaks`) finds it, by the maps with or without labels. This
check plants it in each of the benchmark's three bases with the benchmark's label leak, trains
a model with the benchmark's recipe (`benchmarks.shortcut_models.train_one`; the photographs'
model is the unseen check's), and audits its test split without and with labels (an ``.npz``
with each image's object class as its label), scored like the benchmark
(`benchmarks.shortcuts.evaluate`: precision over the flagged rows, recall over the rows the
model relies on, SpRAy beside it).

Usage::

    python -m benchmarks.shortcut_patch [--only shapes shapes+labels ...]

trains the models it has not cached (``runs/shortcut_unseen/``, 2-3 min each on 2 CPU cores)
and writes ``benchmarks/results/shortcut_patch.{json,md}``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

NAME = "patch@anywhere"
BASES = ("shapes", "photos", "letters")
RUNS = tuple(f"{b}{s}" for b in BASES for s in ("", "+labels"))


def evaluate(run: str, work: Path) -> dict[str, Any]:
    """Audit the test split of run ``run`` (a base, ``+labels``: with labels) with its model
    (trained first if not cached) and score it (`benchmarks.shortcuts.evaluate_trained`)."""
    from benchmarks.shortcut_unseen import MODELS
    from benchmarks.shortcuts import evaluate_trained

    base, _, labels = run.partition("+")
    folder = work / run  # a store of its own per run
    folder.mkdir(parents=True, exist_ok=True)
    return evaluate_trained(base, NAME, MODELS, folder, labels=bool(labels))


def markdown_table(results: list[dict]) -> str:
    """One row per base and with or without labels."""
    from benchmarks.shortcuts import fmt, found_text

    lines = [
        "| base | labels | clean acc. | relied on / marked | P / R | F1 | SpRAy oracle F1 | "
        "what the reliance test found |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        f = r["fastfem"]
        lines.append(
            f"| {r['base']} | {'yes' if r['labels'] else 'no'} | "
            f"{r['model']['clean_accuracy']:.2f} | {f['relied_on']} / {f['marked']} | "
            f"{fmt(f['precision'])} / {fmt(f['recall'])} | {fmt(f['f1'])} | "
            f"{fmt(r['spray']['oracle']['f1'])} | {found_text(r)} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    from benchmarks.shortcuts import run_check

    return run_check(argv, __doc__, list(RUNS), evaluate, "shortcut_patch", markdown_table)


if __name__ == "__main__":
    raise SystemExit(main())
