"""Label-aware views (`fastfem.audit.detectors.by_class`): the detectors per predicted class and
among the rows whose prediction disagrees with their label, on real stores."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pyarrow as pa

from fastfem.audit import ResultStore
from fastfem.audit.detectors import detect
from fastfem.audit.detectors.by_class import _class_subsets, disagreement_mask, label_views
from fastfem.audit.detectors.summary import Classes, row_classes
from fastfem.audit.store.schema import store_schema

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "support"))
from synthetic_store import blob_maps, plant_spot, write_store  # noqa: E402


def write_shortcut_store(root: Path, n: int = 1500, seed: int = 0) -> dict[str, np.ndarray]:
    """A store where a spot marks 12% of the rows, all predicted class 0 (a learned shortcut)
    while their labels stay their true class (1 or 2); 8% of the other rows are mislabelled.
    Returns the planted masks."""
    rng = np.random.default_rng(seed)
    maps = blob_maps(rng, n, 32) + 0.5 * blob_maps(rng, n, 32)  # an object and a distractor
    true = rng.integers(0, 3, n)
    marked = (rng.random(n) < 0.12) & (true > 0)
    plant_spot(maps, marked, (2, 22), 0.6)
    pred = np.where(marked, 0, true)
    noisy = ~marked & (rng.random(n) < 0.08)
    label = np.where(noisy, (true + 1) % 3, true)
    rows = {
        "id": [f"img-{i:05d}" for i in range(n)],
        "label": [f"c{c}" for c in label],
        "status": ["ok"] * n,
        "error": [None] * n,
        "prediction": [int(p) for p in pred],
    }
    store = ResultStore(root)
    store.write_part(0, pa.Table.from_pydict(rows, schema=store_schema(list(rows))), maps)
    return {"marked": marked, "disagree": marked | noisy}


def test_class_view_and_disagreement_view_find_the_learned_shortcut(tmp_path):
    planted = write_shortcut_store(tmp_path / "s")
    store = ResultStore(tmp_path / "s")
    rows = store.read_rows()
    np.testing.assert_array_equal(disagreement_mask(rows), planted["disagree"])
    det = detect(store, rows, views=True)
    views = {v.name: v for v in det.views.views}
    assert set(views) == {"class 0", "class 1", "class 2", "label disagrees"}, det.views
    assert views["class 1"].rows + views["class 2"].rows + views["class 0"].rows == len(rows["id"])
    marked = planted["marked"]
    for name in ("class 0", "label disagrees"):
        v = views[name]
        assert len(v.candidates) >= 1, (name, v)
        hits = marked[v.flagged]
        assert hits.mean() >= 0.9 and hits.sum() >= 0.9 * marked.sum(), (name, hits.mean())
        assert np.all(v.score >= 1.0) and v.flagged.size == v.score.size == v.cluster.size
        cand = v.candidates[0]
        assert cand["peak_y"] < 0.25 and cand["peak_x"] > 0.6, cand  # the spot at (1, 11)
    # class 1 and 2 carry no mark: no candidate, nothing flagged
    assert views["class 1"].flagged.size == 0 and views["class 2"].flagged.size == 0
    # views are evidence beside the store-wide flags, which they do not change
    plain = detect(store, rows)
    np.testing.assert_array_equal(plain.flagged, det.flagged)
    assert plain.views.views == [] and plain.views.skipped == {}


def test_views_on_a_store_without_labels_and_with_small_classes(tmp_path):
    """The synthetic store's labels are its predictions (no disagreement); its error rows
    belong to no view."""
    write_store(tmp_path / "s", 900, part=300, rate=0.1)
    store = ResultStore(tmp_path / "s")
    rows = store.read_rows()
    ok = np.asarray(rows["status"], dtype=object) == "ok"
    lv = label_views(store, rows, ok, row_classes(rows), min_rows=230)
    sizes = np.bincount(row_classes(rows).index[ok])
    expect = {f"class {c}" for c in np.flatnonzero(sizes >= 230)}
    assert {v.name for v in lv.views} == expect
    assert all(v.rows == sizes[v.cls] for v in lv.views)
    assert {k for k in lv.skipped if k.startswith("class")} == {
        f"class {c}" for c in np.flatnonzero(sizes < 230)
    }
    assert lv.skipped["label disagrees"] == "0 rows (a view needs 230)"
    del rows["label"]
    lv = label_views(store, rows, ok, row_classes(rows))
    assert lv.skipped["label disagrees"] == "the audit has no labels or no predictions"


def test_class_subsets_keep_the_largest_classes():
    idx = np.array([0] * 10 + [1] * 30 + [2] * 20 + [3] * 3 + [-1] * 4)
    ok = np.ones(idx.shape, bool)
    ok[0] = False
    classes = Classes(idx, ["a", "b", "c", "d"], "prediction")
    subsets, skipped = _class_subsets(ok, classes, min_rows=5, max_views=2)
    assert [c for c, _ in subsets] == [1, 2]
    assert subsets[0][1].sum() == 30 and not subsets[0][1][-4:].any()
    assert skipped == {
        "class a": "beyond the 2 largest classes",
        "class d": "3 rows (a view needs 5)",
    }
