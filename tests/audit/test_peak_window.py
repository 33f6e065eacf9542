"""The peak-window check (`benchmarks.shortcut_peak_window`): its per-class counts against a
reference written from their definitions, and one real model's run."""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks.shortcut_peak_window import DROP, class_tests, markdown_table
from fastfem.audit.reliance.peaks import labels_mark, labels_p_value
from fastfem.audit.reliance.stats import MIN_HITS


def test_class_tests_count_hits_marks_and_what_the_labels_read():
    rng = np.random.default_rng(0)
    n = 300
    pred = rng.integers(0, 3, n)
    drop = rng.uniform(0, 1, n)
    marked = rng.uniform(0, 1, n) < 0.3
    relied = marked & (rng.uniform(0, 1, n) < 0.8)
    label_cls = np.where(rng.uniform(0, 1, n) < 0.7, pred, (pred + 1) % 3)
    drop[pred == 2] = 0.0  # class 2: no hit, left out
    got = class_tests(pred, drop, marked, relied, label_cls)
    assert [t["class"] for t in got] == [0, 1]
    for t in got:
        own = pred == t["class"]
        hits = own & (drop >= DROP)
        other = label_cls != t["class"]
        share, rest = other[hits].mean(), other[own & ~hits].mean()
        assert t["rows"] == own.sum() and t["hits"] == hits.sum() >= MIN_HITS
        assert t["marked"] == (hits & marked).sum() and t["relied_on"] == (hits & relied).sum()
        assert t["label_other"] == pytest.approx(share, abs=1e-3)
        assert t["label_other_rest"] == pytest.approx(rest, abs=1e-3)
        p = labels_p_value(hits, own, label_cls, t["class"])
        assert t["p_value"] == pytest.approx(p)
        assert t["labels_confirm"] == labels_mark(share, p, 3)
        assert t["flagged_with_labels"] == (hits & other).sum()


def test_labels_confirm_a_class_whose_hits_are_labelled_another_class():
    pred = np.zeros(40, int)
    drop = np.r_[np.ones(10), np.zeros(30)]
    label_cls = np.r_[np.ones(8, int), np.zeros(32, int)]  # 8 of 10 hits, 0 of 30 others
    marked = label_cls == 1
    (t,) = class_tests(pred, drop, marked, marked, label_cls)
    assert t["labels_confirm"] and t["flagged_with_labels"] == 8 == t["flagged_marked"]
    # a class that mixes: 8 of 10 hits labelled another class, and 24 of 30 other rows
    label_cls = np.r_[np.ones(8, int), np.zeros(2, int), np.ones(24, int), np.zeros(6, int)]
    (t,) = class_tests(pred, drop, marked, marked, label_cls)
    assert not t["labels_confirm"]  # the hits do not stand out
    assert "**confirmed**" not in markdown_table(
        [{"base": "b", "config": "c", "relied_on": 8, "1/4": [t]}], (4,)
    )
    # 10 of 10 hits and 18 of 30 other rows: the rows labelled the class are never hit
    label_cls = np.r_[np.ones(28, int), np.zeros(12, int)]
    (t,) = class_tests(pred, drop, marked, marked, label_cls)
    assert t["labels_confirm"] and t["label_other_rest"] == pytest.approx(0.6)


@pytest.mark.slow
def test_on_a_real_model_the_window_at_the_peak_hides_a_checker_the_model_relies_on(tmp_path):
    from benchmarks.shortcut_models import MODEL_DIR
    from benchmarks.shortcut_peak_window import measure

    r = measure(
        "shapes",
        "checker@top-left",
        MODEL_DIR / "shapes-checker-top-left.keras",
        tmp_path,
        sides=(4,),
    )
    tests = {t["class"]: t for t in r["1/4"]}
    mark = tests[0]  # the checker's class
    assert mark["relied_on"] >= 0.9 * r["relied_on"] and mark["marked"] >= 0.9 * mark["hits"]
    assert mark["labels_confirm"]
    assert not any(t["labels_confirm"] for c, t in tests.items() if c != 0)
