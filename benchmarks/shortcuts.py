#!/usr/bin/env python
"""Shortcut benchmark: does the audit find the shortcuts a model *relies on*?

For every base dataset and configuration of `benchmarks.shortcut_data` (a mark kind at a place,
and the ``none`` control) with a cached model (`benchmarks.shortcut_models`: trained on a label
leak until it relies on the mark), the test split is audited with the default audit
(`fastfem.audit.audit`: the map detectors and the reliance test) and the flags are scored:

* **relied on** (the ground truth, `benchmarks.shortcut_data.relied_on`): the model's output on
  each marked image and on its clean twin — the mark raises the mark class's probability by
  >= 0.5 or turns the prediction to it;
* precision = flagged rows that carry the mark / flagged rows; recall over the relied-on rows,
  and over every marked row beside it; F1 of precision and relied-on recall;
* the same for the flags of the map detectors alone and of the reliance test alone;
* the peer, SpRAy (`benchmarks.spray`, CoRelAy 1.0.0) on the same stored maps, per predicted
  class, k = 2..8: its eigengap reading and its oracle-best cluster, scored the same way;
* the control (``none``): the share of its rows flagged.

One set of thresholds for every row; nothing tells the audit where a mark is or what it looks
like. Usage::

    python -m benchmarks.shortcuts [--base B ...] [--only CONFIG ...] [--split test|holdout]
                                   [--labels]

writes ``benchmarks/results/shortcuts[-holdout][-labels].{json,md}``; a whole run of the test
split (every base and configuration, no labels) also rewrites the README's table (between its
markers). ``--labels`` audits each split with its labels (the objects' classes), as a labelled
dataset is audited: the reliance test then asks them about its leads (colour leads and
near misses).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"


def scores(flagged: np.ndarray, marked: np.ndarray, relied: np.ndarray) -> dict[str, Any]:
    """Precision (flagged rows carrying the mark), recall over the relied-on rows and over the
    marked rows, F1 (precision, relied-on recall), counts; NaN where undefined."""
    n_flag, n_rel, n_mark = int(flagged.sum()), int(relied.sum()), int(marked.sum())
    precision = float(np.sum(flagged & marked) / n_flag) if n_flag else float("nan")
    recall = float(np.sum(flagged & relied) / n_rel) if n_rel else float("nan")
    recall_marked = float(np.sum(flagged & marked) / n_mark) if n_mark else float("nan")
    both = precision + recall if n_flag and n_rel else 0.0
    f1 = 2 * precision * recall / both if both > 0 else (0.0 if n_rel else float("nan"))
    return {
        "precision": precision,
        "recall": recall,
        "recall_marked": recall_marked,
        "f1": f1,
        "flagged": n_flag,
        "relied_on": n_rel,
        "marked": n_mark,
        "rows": int(len(marked)),
        "flag_rate": n_flag / max(len(marked), 1),
    }


def flagged_rows(store: Path, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(all, by maps, by reliance)`` flagged masks over the ``n`` rows of an array audit."""
    import pyarrow.parquet as pq

    table = pq.read_table(store / "flags.parquet").to_pydict()
    every = np.zeros(n, bool)
    maps = np.zeros(n, bool)
    rel = np.zeros(n, bool)
    for rid, reason in zip(table["id"], table["reason"], strict=True):
        i = int(rid)
        every[i] = True
        parts = [p.strip() for p in reason.split(",")]
        rel[i] = any(p.startswith("relies on") for p in parts)
        maps[i] = any(not p.startswith("relies on") for p in parts)
    return every, maps, rel


def spray_scores(store: Path, marked: np.ndarray, relied: np.ndarray) -> dict[str, Any]:
    """SpRAy's eigengap reading and oracle-best cluster on the store's maps, scored with
    `scores`; the oracle picks the cluster with the best F1 as `scores` defines it."""
    from benchmarks import spray

    ids, maps, pred = spray.store_inputs(store)
    order = np.asarray([int(i) for i in ids])
    m = np.empty_like(maps)
    p = np.empty_like(pred)
    m[order], p[order] = maps, pred
    clusterings, _ = spray.spray_clusterings(m, p)
    eigengap = spray.eigengap_flags(clusterings, len(p))
    best: dict[str, Any] = {"f1": 0.0}
    for c in clusterings:
        for k, labels in c.labels.items():
            for j in np.unique(labels):
                flagged = np.zeros(len(p), bool)
                flagged[c.rows[labels == j]] = True
                s = scores(flagged, marked, relied)
                if s["f1"] > best["f1"]:
                    best = {**s, "class": int(c.cls), "k": int(k), "cluster": int(j)}
    return {"eigengap": scores(eigengap, marked, relied), "oracle": best}


#: The columns of ``reliance.parquet`` kept per candidate in the results' JSON.
EVIDENCE = (
    "status predicted_class region fill lift place_lift collapse transplant transplant_null "
    "label_other label_other_rest flagged same_rows_region places"
)


def candidate_evidence(store: Path) -> list[dict[str, Any]]:
    """Each reliance candidate's region, class and test statistics (``reliance.parquet``)."""
    import pyarrow.parquet as pq

    table = pq.read_table(store / "reliance.parquet").to_pylist()
    return [{k: r[k] for k in EVIDENCE.split()} for r in table]


def evaluate(
    base: str,
    name: str,
    split: str,
    work: Path,
    labels: bool = False,
    model: Path | None = None,
    record: bool = False,
) -> dict[str, Any]:
    """Audit one configuration's split with its cached model (or the ``.keras`` file
    ``model``) and score it; ``labels``: the audited source carries each image's label (the
    class of its object), as a labelled dataset's would (an ``.npz`` with ``labels``);
    ``record``: the model's clean accuracy and relied-on share beside the scores (``model``)."""
    import keras

    from benchmarks.shortcut_data import generate_shortcut, reliance_summary, relied_on
    from benchmarks.shortcut_models import clean_accuracy, load, model_path, predictor
    from fastfem.audit import audit

    s = generate_shortcut(name, split, base=base)
    net = load(name, base) if model is None else keras.saving.load_model(model, safe_mode=True)
    predict = predictor(net)
    relied = relied_on(predict, s)
    store = work / f"{base}-{name.replace('@', '-')}-{split}"
    source: Any = s.images
    if labels:
        source = str(work / f"{store.name}.npz")
        np.savez(source, images=s.images, labels=np.asarray(s.labels).astype(str))
    t0 = time.perf_counter()
    summary = audit(source, str(model or model_path(name, base)), out=store)
    seconds = time.perf_counter() - t0
    every, maps, rel = flagged_rows(store, len(s))
    row: dict[str, Any] = {
        "base": base,
        "config": name,
        "kind": s.shortcut.kind,
        "split": split,
        "labels": labels,
        "fastfem": scores(every, s.marked, relied),
        "maps_only": scores(maps, s.marked, relied),
        "reliance_only": scores(rel, s.marked, relied),
        "reliance": summary.reliance,
        "candidates": candidate_evidence(store),
        "audit_seconds": round(seconds, 2),
    }
    if name != "none":
        row["spray"] = spray_scores(store, s.marked, relied)
    if record:
        share = reliance_summary(relied, s)["relied_on_share"]
        row["model"] = {"clean_accuracy": clean_accuracy(predict, s), "relied_on_share": share}
    return row


def evaluate_trained(
    base: str,
    name: str,
    folder: Path,
    work: Path,
    build: Callable | None = None,
    seeds: Sequence[int] | None = None,
    labels: bool = False,
) -> dict[str, Any]:
    """`evaluate` the test split of configuration ``name`` on ``base`` with the model cached in
    ``folder`` (trained first if missing, with the benchmark's recipe:
    `benchmarks.shortcut_models.train_one`; ``build`` another architecture, ``seeds`` other
    training seeds; ``labels``: audited with its labels), the model's clean accuracy and
    relied-on share beside the scores: the checks beside the benchmark
    (`benchmarks.shortcut_resnet`, `benchmarks.shortcut_unseen`, `benchmarks.shortcut_retrained`,
    `benchmarks.shortcut_patch`)."""
    from benchmarks.shortcut_models import SEEDS, model_path, train_one

    path = model_path(name, base, folder)
    if not path.exists():
        train_one(name, base, build=build, path=path, seeds=seeds or SEEDS)
    return evaluate(base, name, "test", work, labels=labels, model=path, record=True)


def run_check(
    argv: list[str] | None,
    doc: str,
    names: Sequence[str],
    evaluate_one: Callable[[str, Path], dict[str, Any]],
    stem: str,
    table: Callable[[list[dict]], str],
) -> int:
    """The command of a check beside the benchmark (`benchmarks.shortcut_digits`,
    `benchmarks.shortcut_resnet`, `benchmarks.shortcut_unseen`; its module docstring ``doc``
    gives the description): Keras on TensorFlow unless the process chose a backend, each name
    of ``--only`` (default ``names``) evaluated by ``evaluate_one(name, work)`` in a temporary
    folder and printed as JSON, then the rows written to ``--out/{stem}.json`` and their
    ``table(rows)`` to ``--out/{stem}.md``."""
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")  # a check's own process
    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    parser.add_argument("--only", nargs="*", default=list(names))
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.only:
            rows.append(evaluate_one(name, Path(tmp)))
            print(json.dumps(rows[-1]), flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{stem}.json").write_text(json.dumps(rows, indent=1))
    text = table(rows)
    (args.out / f"{stem}.md").write_text(text)
    print(text)
    return 0


def cost(base: str, name: str, n: int, work: Path, reps: int = 2) -> dict[str, Any]:
    """The reliance test's and the detectors' cost beside the audit's: ``n`` test images of one
    configuration audited with its model, with the reliance test off and on (``reps`` each,
    alternating; compilation excluded by a warm-up audit of each); seconds, medians, min/max
    and the ratio of the extra time to the audit without it."""
    from benchmarks.shortcut_data import generate_shortcut
    from benchmarks.shortcut_models import model_path
    from fastfem.audit import audit

    images = generate_shortcut(name, "test", n=n, base=base).images
    model = str(model_path(name, base))
    times: dict[str, list[float]] = {"off": [], "on": []}
    line = ""
    for rep in range(reps + 1):
        for mode in ("off", "on"):
            t0 = time.perf_counter()
            line = audit(
                images,
                model,
                out=work / f"cost-{mode}-{rep}",
                reliance_sample=0 if mode == "off" else 320,
            ).reliance
            if rep:  # rep 0 warms the compilation caches
                times[mode].append(time.perf_counter() - t0)
    med = {m: float(np.median(v)) for m, v in times.items()}
    return {
        "base": base,
        "config": name,
        "images": n,
        "seconds": times,
        "median": med,
        "extra_share": (med["on"] - med["off"]) / med["off"],
        "reliance": line,
    }


def _cost_key(row: dict) -> tuple[str, str, int]:
    """A cost row's identity in ``shortcuts-cost.json``: base, configuration, images."""
    return row["base"], row["config"], row["images"]


def fmt(v: float) -> str:
    """A score with two decimals, "–" for NaN (none to score)."""
    return "–" if v != v else f"{v:.2f}"


def near_miss_text(row: dict) -> list[str]:
    """The reliance test's near misses (``candidates`` whose status is not "confirmed"), each
    with what it lacks."""
    return [
        f"near miss, class {c['predicted_class']} {c['region']} ({c['fill']}): "
        + c["status"].removeprefix("not confirmed: ")
        for c in row.get("candidates", [])
        if c.get("status", "confirmed") != "confirmed"
    ]


def found_text(row: dict) -> str:
    """The reliance test's findings (its confirmed candidates, as the summary line words
    them), then its near misses (`near_miss_text`)."""
    found = [
        f"class {c['predicted_class']} relies on {c['region']} ({c['fill']})"
        + (f", where {c['places']} lies" if c.get("places") else "")  # a global's place
        + f": {c['flagged']} rows"
        for c in row.get("candidates", [])
        if c.get("status", "confirmed") == "confirmed"
    ]
    return "; ".join(found + near_miss_text(row)) or "–"


def markdown_table(results: list[dict]) -> str:
    """The README's table: one row per base and configuration."""
    head = (
        "| base | shortcut | relied on / marked | fastfem P / R (R marked) | F1 | maps only "
        "P / R | reliance only P / R | SpRAy eigengap F1 | SpRAy oracle F1 | what the reliance "
        "test found |\n"
        "|---|---|---|---|---|---|---|---|---|---|\n"
    )
    lines = []
    for r in results:
        f, m, rel = r["fastfem"], r["maps_only"], r["reliance_only"]
        if r["config"] == "none":
            lines.append(
                f"| {r['base']} | none (control) | – | flags {f['flagged']} of {f['rows']} "
                f"({100 * f['flag_rate']:.1f}%) | – | {m['flagged']} | {rel['flagged']} | – | – | "
                f"{found_text(r)} |"
            )
            continue
        sp = r["spray"]
        lines.append(
            f"| {r['base']} | {r['config']} | {f['relied_on']} / {f['marked']} | "
            f"{fmt(f['precision'])} / {fmt(f['recall'])} ({fmt(f['recall_marked'])}) | "
            f"{fmt(f['f1'])} | {fmt(m['precision'])} / {fmt(m['recall'])} | "
            f"{fmt(rel['precision'])} / {fmt(rel['recall'])} | "
            f"{fmt(sp['eigengap']['f1'])} | {fmt(sp['oracle']['f1'])} | {found_text(r)} |"
        )
    return head + "\n".join(lines) + "\n"


README = ROOT / "README.md"
TABLE_START, TABLE_END = "<!-- shortcuts table: start -->", "<!-- shortcuts table: end -->"


def write_readme_table(table: str, readme: Path = README) -> None:
    """Replace the README's shortcut table (between the ``TABLE_START`` / ``TABLE_END``
    markers) with ``table``."""
    text = readme.read_text()
    head, rest = text.split(TABLE_START, 1)
    _, tail = rest.split(TABLE_END, 1)
    readme.write_text(f"{head}{TABLE_START}\n{table}{TABLE_END}{tail}")


def results_suffix(split: str, labels: bool) -> str:
    """The results files' suffix: ``[-split][-labels]`` (none for the test split unlabelled)."""
    return ("" if split == "test" else f"-{split}") + ("-labels" if labels else "")


def write_results(
    results: list[dict],
    out: Path,
    split: str,
    readme: bool,
    labels: bool = False,
    command: str | None = None,
) -> str:
    """``out/shortcuts[-split][-labels].{json,md}`` and, for a whole test-split run without
    labels, the README's table; the JSON's ``command`` is this process's (default) or the
    ``command`` given (a table regenerated keeps the command that measured its rows)."""
    suffix = results_suffix(split, labels)
    out.mkdir(parents=True, exist_ok=True)
    command = " ".join(sys.argv) if command is None else command
    (out / f"shortcuts{suffix}.json").write_text(
        json.dumps({"command": command, "results": results}, indent=1, default=str)
    )
    table = markdown_table(results)
    (out / f"shortcuts{suffix}.md").write_text(table)
    if readme:
        write_readme_table(table)
    return table


def main(argv: list[str] | None = None) -> int:
    from benchmarks.shortcut_data import BASES, configs_of
    from benchmarks.shortcut_models import model_path

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base", nargs="*", default=list(BASES))
    parser.add_argument("--only", nargs="*", help="configurations (default: every cached one)")
    parser.add_argument("--split", default="test", choices=("test", "holdout"))
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument(
        "--labels",
        action="store_true",
        help="audit each split with its labels (results in shortcuts[-holdout]-labels.*)",
    )
    parser.add_argument(
        "--cost",
        type=int,
        nargs="+",
        metavar="N",
        help="instead: the reliance test's cost on N images (several sizes: one row each)",
    )
    parser.add_argument(
        "--table-only",
        action="store_true",
        help="instead: rewrite the tables (.md, README) from the last run's JSON",
    )
    args = parser.parse_args(argv)
    whole = (
        args.split == "test" and not args.only and not args.labels and set(args.base) == set(BASES)
    )
    if args.table_only:
        suffix = results_suffix(args.split, args.labels)
        stored = json.loads((args.out / f"shortcuts{suffix}.json").read_text())
        results, command = stored["results"], stored.get("command")
        print(write_results(results, args.out, args.split, whole, args.labels, command))
        return 0
    if args.cost:
        name = (args.only or ["watermark@middle"])[0]
        rows = []
        for n in args.cost:
            with tempfile.TemporaryDirectory() as tmp:
                rows.append(cost(args.base[0], name, n, Path(tmp)))
            print(json.dumps(rows[-1], indent=1), flush=True)
        args.out.mkdir(parents=True, exist_ok=True)
        path = args.out / "shortcuts-cost.json"
        old = json.loads(path.read_text()) if path.exists() else []
        merged = {_cost_key(r): r for r in [*old, *rows]}  # this run's rows replace the same
        path.write_text(json.dumps(sorted(merged.values(), key=_cost_key), indent=1))
        return 0
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for base in args.base:
            for name in args.only or configs_of(base):
                if not model_path(name, base).exists():
                    print(f"skip {base} {name}: no cached model", file=sys.stderr)
                    continue
                row = evaluate(base, name, args.split, Path(tmp), args.labels)
                f = row["fastfem"]
                print(
                    f"{base:7s} {name:18s} P {fmt(f['precision'])} R {fmt(f['recall'])} "
                    f"F1 {fmt(f['f1'])} flagged {f['flagged']} relied {f['relied_on']} "
                    f"SpRAy oracle {fmt(row.get('spray', {}).get('oracle', {}).get('f1', 0))} "
                    f"({row['audit_seconds']} s) {row['reliance']}",
                    flush=True,
                )
                results.append(row)
    print(write_results(results, args.out, args.split, whole, args.labels))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
