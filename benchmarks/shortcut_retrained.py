#!/usr/bin/env python
"""A check of the shortcut audit on other models of the same data: the benchmark's shapes and
letters configurations trained again from other seeds.

The benchmark's models (`benchmarks.shortcut_models`, committed) are one training run each.
The audit's thresholds were set while those models' marks were being found, so some of what
they find may be those weights' accident. This check trains every configuration of the
``shapes`` and ``letters`` bases again with the same recipe and data from other seeds
(``SEEDS``; with the benchmark's own seeds, TensorFlow's CPU kernels give weights that
differ only a little),
audits each test split with the default audit and scores it like the benchmark
(`benchmarks.shortcuts.evaluate`), beside the committed models' scores
(`benchmarks/results/shortcuts.json`).

Usage::

    python -m benchmarks.shortcut_retrained [--only shapes/watermark@middle ...]

trains the models it has not cached (``runs/shortcut_retrained/``, 2-4 min each on 2 CPU
cores) and writes ``benchmarks/results/shortcut_retrained.{json,md}``.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MODELS = ROOT / "runs" / "shortcut_retrained"
BASES = ("shapes", "letters")
SEEDS = (2026, 2027, 2028)  # the benchmark's are 1234-1236
COMMITTED = ROOT / "benchmarks" / "results" / "shortcuts.json"


def evaluate(name: str, work: Path) -> dict:
    """Audit ``name``'s (``"base/configuration"``) test split with its model trained from
    ``SEEDS`` (first, if not cached) and score it like the benchmark, the committed model's
    scores beside it."""
    from benchmarks.shortcuts import evaluate_trained

    base, config = name.split("/")
    row = evaluate_trained(base, config, MODELS, work, seeds=SEEDS)
    row["committed"] = committed_scores()[base, config]
    return row


@functools.cache
def committed_scores() -> dict[tuple[str, str], dict]:
    """The committed models' ``fastfem`` scores and ``reliance`` line by (base, configuration),
    read once from ``COMMITTED``."""
    rows = json.loads(COMMITTED.read_text())["results"]
    return {(r["base"], r["config"]): {k: r[k] for k in ("fastfem", "reliance")} for r in rows}


def markdown_table(rows: list[dict]) -> str:
    """One row per configuration: the model trained from other seeds — its clean accuracy,
    relied-on rows, scores, SpRAy's oracle beside them — and the committed model's."""
    from benchmarks.shortcuts import fmt, found_text

    head = (
        "| base | shortcut | clean acc. | relied on / marked (committed) | P / R | "
        "P / R committed | F1 (committed) | SpRAy oracle F1 | what the reliance test found |\n"
        "|---|---|---|---|---|---|---|---|---|\n"
    )
    lines = []
    for r in rows:
        f, c = r["fastfem"], r["committed"]["fastfem"]
        acc = fmt(r["model"]["clean_accuracy"])
        if r["config"] == "none":
            lines.append(
                f"| {r['base']} | none (control) | {acc} | – | flags {f['flagged']} of "
                f"{f['rows']} | flags {c['flagged']} of {c['rows']} | – | – | {found_text(r)} |"
            )
            continue
        lines.append(
            f"| {r['base']} | {r['config']} | {acc} | "
            f"{f['relied_on']} / {f['marked']} ({c['relied_on']}) | "
            f"{fmt(f['precision'])} / {fmt(f['recall'])} | "
            f"{fmt(c['precision'])} / {fmt(c['recall'])} | "
            f"{fmt(f['f1'])} ({fmt(c['f1'])}) | {fmt(r['spray']['oracle']['f1'])} | "
            f"{found_text(r)} |"
        )
    return head + "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    from benchmarks.shortcut_data import configs_of
    from benchmarks.shortcuts import run_check

    names = [f"{base}/{config}" for base in BASES for config in configs_of(base)]
    return run_check(argv, __doc__, names, evaluate, "shortcut_retrained", markdown_table)


if __name__ == "__main__":
    raise SystemExit(main())
