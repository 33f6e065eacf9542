"""`fastfem.audit.detectors`: every formula against a NumPy reference written from its
docstring, the streaming passes against in-memory ones, and the Parquet tables' schemas.

The stores are real (`ResultStore.write_part`: Parquet parts and map shards), filled with
synthetic maps (`synthetic_store`): Gaussian blobs for objects, a fixed hot spot planted in
some rows.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from synthetic_store import blob_maps, plant_spot, write_store

from fastfem.audit import ResultStore
from fastfem.audit.detectors import (
    box,
    detect,
    energy,
    hotspots,
    kmeans,
    shards,
    summary,
    write_detection,
)
from fastfem.audit.detectors.clusters import class_mean_maps, explanation_clusters
from fastfem.audit.detectors.tables import clusters_schema, flags_schema, read_table


# ---------------------------------------------------------------------------- references
def ref_q(m: np.ndarray) -> np.ndarray:
    """q = max(m, 0) / sum, uniform when there is no positive energy."""
    p = np.maximum(m.astype(np.float64), 0)
    return p / p.sum() if p.sum() > 0 else np.full(m.shape, 1.0 / m.size)


def ref_pool(q: np.ndarray, g: int) -> np.ndarray:
    """Sum q over a grid of min(g, n) equal intervals per axis, splitting a source cell between
    the grid cells it overlaps in proportion to the overlap (explicit loops)."""

    def weights(n: int) -> np.ndarray:
        if n <= g:
            return np.eye(n)
        w = np.zeros((g, n))
        for y in range(n):
            lo, hi = y * g / n, (y + 1) * g / n  # source cell y on the grid's axis
            for a in range(g):
                w[a, y] = max(0.0, min(hi, a + 1) - max(lo, a)) / (hi - lo)
        return w

    wh, ww = weights(q.shape[0]), weights(q.shape[1])
    out = np.zeros((wh.shape[0], ww.shape[0]))
    for a in range(wh.shape[0]):
        for b in range(ww.shape[0]):
            for y in range(q.shape[0]):
                for x in range(q.shape[1]):
                    out[a, b] += wh[a, y] * ww[b, x] * q[y, x]
    return out


# ---------------------------------------------------------------------------- energy
@pytest.mark.parametrize("shape,g", [((16, 16), 8), ((7, 5), 4), ((5, 6), 8), ((12, 20), 8)])
def test_pooled_energy_matches_the_reference(shape, g):
    rng = np.random.default_rng(0)
    maps = rng.normal(size=(3, *shape)).astype(np.float32)
    maps[1] = -np.abs(maps[1])  # no positive energy: uniform
    got = np.asarray(energy.pooled_energy(maps, g))
    for i in range(3):
        np.testing.assert_allclose(got[i], ref_pool(ref_q(maps[i]), g), atol=1e-6)
        assert abs(got[i].sum() - 1) < 1e-5
    assert got.shape[1:] == energy.grid_shape(shape, g)


def test_energy_distribution_keeps_nan_maps_nan_and_hellinger_is_the_distance():
    maps = np.random.default_rng(1).random((3, 16, 16)).astype(np.float32)
    maps[2] = np.nan
    q = np.asarray(energy.energy_distribution(maps))
    np.testing.assert_allclose(q[0], ref_q(maps[0]), rtol=1e-5)
    assert np.isnan(q[2]).all()
    f = np.asarray(energy.hellinger_features(maps[:2], 8))
    p0, p1 = ref_pool(ref_q(maps[0]), 8).ravel(), ref_pool(ref_q(maps[1]), 8).ravel()
    hellinger_sq = np.sum((np.sqrt(p0) - np.sqrt(p1)) ** 2)
    assert abs(np.sum((f[0] - f[1]) ** 2) - hellinger_sq) < 1e-5


# ---------------------------------------------------------------------------- k-means
def blobs(rng, centres: np.ndarray, n: int, sd: float) -> tuple[np.ndarray, np.ndarray]:
    label = rng.integers(0, len(centres), n)
    return (centres[label] + rng.normal(0, sd, (n, centres.shape[1]))).astype(np.float32), label


def test_assign_and_sums_match_numpy():
    rng = np.random.default_rng(2)
    x = rng.random((50, 6)).astype(np.float32)
    c = rng.random((4, 6)).astype(np.float32)
    valid = rng.random(50) > 0.2
    d2 = ((x[:, None, :] - c[None]) ** 2).sum(-1)
    label, dist = map(np.asarray, kmeans.assign(x, c))
    np.testing.assert_array_equal(label, d2.argmin(1))
    np.testing.assert_allclose(dist, d2.min(1), atol=1e-5)
    sums, counts, inertia = map(np.asarray, kmeans.cluster_sums(x, valid, c, 4))
    for j in range(4):
        members = valid & (d2.argmin(1) == j)
        np.testing.assert_allclose(sums[j], x[members].sum(0), atol=1e-5)
        assert counts[j] == members.sum()
    assert abs(inertia - d2.min(1)[valid].sum()) < 1e-4


def test_streaming_kmeans_is_lloyd_and_independent_of_the_chunking():
    rng = np.random.default_rng(3)
    centres = np.eye(5, 8, dtype=np.float32) * 3
    x, truth = blobs(rng, centres, 600, 0.3)

    def chunked(size):
        return lambda: (
            (x[i : i + size], np.ones(len(x[i : i + size]), bool)) for i in range(0, 600, size)
        )

    a, _ = kmeans.streaming_kmeans(chunked(600), x[::3], 5)
    b, _ = kmeans.streaming_kmeans(chunked(64), x[::3], 5)
    np.testing.assert_allclose(a, b, atol=1e-5)
    label = ((x[:, None] - a[None]) ** 2).sum(-1).argmin(1)
    # a fixed point of Lloyd's algorithm: every centroid is the mean of its members
    for j in range(5):
        np.testing.assert_allclose(a[j], x[label == j].mean(0), atol=1e-4)
    # well-separated blobs are recovered exactly (up to the cluster numbering)
    pairs = {(int(t), int(lab)) for t, lab in zip(truth, label, strict=True)}
    assert len(pairs) == 5


def test_kmeans_plus_plus_is_seeded_and_k_is_capped_by_distinct_rows():
    x = np.random.default_rng(4).random((40, 3))
    np.testing.assert_array_equal(
        kmeans.kmeans_plus_plus(x, 4, 7), kmeans.kmeans_plus_plus(x, 4, 7)
    )
    same = np.ones((10, 3), np.float32)
    c, _ = kmeans.streaming_kmeans(lambda: [(same, np.ones(10, bool))], same, 8)
    assert c.shape == (1, 3)


# ---------------------------------------------------------------------------- store passes
@pytest.fixture(scope="module")
def small_store(tmp_path_factory):
    root = tmp_path_factory.mktemp("det") / "store"
    marked = write_store(root, 1500, size=16, part=400, rate=0.1, cell=(0, 13), seed=5)
    return root, marked


def test_map_chunks_walk_the_shards_in_row_order_with_nan_padding(small_store):
    root, _ = small_store
    store = ResultStore(root)
    maps = store.read_maps()
    chunks = list(shards.map_chunks(store, chunk_rows=256))
    assert [c.start for c in chunks] == list(range(0, 1500, 256))
    got = np.concatenate([c.maps[: c.count] for c in chunks])
    np.testing.assert_array_equal(np.isnan(got), np.isnan(maps))
    np.testing.assert_array_equal(np.nan_to_num(got), np.nan_to_num(maps))
    assert np.isnan(chunks[-1].maps[chunks[-1].count :]).all()
    idx = [1499, 0, 401, 800]
    np.testing.assert_array_equal(
        np.nan_to_num(shards.read_map_rows(store, idx)), np.nan_to_num(maps[idx])
    )
    with pytest.raises(IndexError):
        shards.read_map_rows(store, [1500])


def test_cluster_summaries_equal_in_memory_means(small_store):
    root, _ = small_store
    store = ResultStore(root)
    rows = store.read_rows()
    maps = store.read_maps()
    ok = rows["status"] == "ok"
    classes = summary.row_classes(rows)
    stats = explanation_clusters(store, ok)
    assert (stats.label[~ok] == -1).all() and (stats.label[ok] >= 0).all()
    q = np.stack([ref_q(m) if g else np.zeros_like(m) for m, g in zip(maps, ok, strict=True)])
    detail = np.stack([ref_pool(x, 16) for x in q[:5]])  # 16x16 maps: detail grid = identity
    np.testing.assert_allclose(detail, q[:5], atol=1e-6)
    for k in range(stats.k):
        members = stats.label == k
        assert stats.sizes[k] == members.sum()
        np.testing.assert_allclose(stats.mean_maps()[k], q[members].mean(0), atol=1e-5)
    sizes, means = class_mean_maps(store, ok, classes.index, len(classes.names))
    for c in range(len(classes.names)):
        in_class = ok & (classes.index == c)
        assert sizes[c] == in_class.sum()
        np.testing.assert_allclose(means[c], q[in_class].mean(0), atol=1e-5)
    # members ranked by their distance to the centroid
    ranked = stats.ranked_members(0)
    assert np.all(np.diff(stats.distance[ranked]) >= 0)


def test_hot_spot_statistics_match_the_formulas(small_store):
    root, _ = small_store
    store = ResultStore(root)
    rows = store.read_rows()
    ok = rows["status"] == "ok"
    stats = explanation_clusters(store, ok)
    res = hotspots.hot_spot_flags(store, ok, stats)
    q = np.stack(
        [
            ref_q(m) if g else np.full_like(m, np.nan)
            for m, g in zip(store.read_maps(), ok, strict=True)
        ]
    )
    mean = stats.mean_detail()
    for k in range(stats.k):
        hot = mean[k] >= hotspots.HOT_FRACTION * mean[k].max()
        np.testing.assert_array_equal(res.hot[k], hot)
        members = stats.label == k
        e = q[:, hot].sum(1)
        np.testing.assert_allclose(res.energy[ok, k], e[ok], atol=1e-5)
        t = mean[k][hot]
        cov = ((q[:, hot] >= hotspots.TAU * t) * t).sum(1) / t.sum()
        np.testing.assert_allclose(res.coverage[ok, k], cov[ok], atol=1e-5)
        rest = ok & ~members
        assert np.isclose(res.contrast[k], e[members].mean() / (e[rest].mean() + hotspots.EPS))
        cv = (q[members][:, hot].std(0) / q[members][:, hot].mean(0)).mean()
        assert np.isclose(res.variation[k], cv, rtol=1e-3)
        score = min(hotspots.MAX_VARIATION / cv, res.contrast[k] / hotspots.MIN_CONTRAST)
        assert np.isclose(res.cluster_score[k], score, rtol=1e-3)
        assert res.candidate[k] == (score >= 1 and members.sum() >= hotspots.MIN_MEMBERS)
    # rows: flagged iff they cover a candidate's hot spot with enough energy there
    floor = hotspots.MIN_ROW_LIFT * res.hot.reshape(stats.k, -1).mean(1)
    fires = res.candidate & (np.nan_to_num(res.coverage) >= hotspots.MIN_COVERAGE)
    fires &= np.nan_to_num(res.energy) >= floor
    np.testing.assert_array_equal(res.score > 0, fires.any(1))
    hit = np.flatnonzero(fires.any(1))
    np.testing.assert_allclose(
        res.score[hit], res.coverage[hit, res.cluster[hit]] / hotspots.MIN_COVERAGE, rtol=1e-6
    )


def test_detect_finds_the_planted_spot_wherever_it_is(tmp_path):
    # corners and edge middles: places the synthetic objects (blobs centred in the middle 60%
    # of the map) leave dark; nothing tells the detectors where
    for cell in [(0, 0), (14, 7), (7, 0)]:
        root = tmp_path / f"s{cell[0]}-{cell[1]}"
        marked = write_store(root, 2400, size=16, part=800, rate=0.1, cell=cell, seed=6)
        det = detect(ResultStore(root))
        tp = np.sum(det.flagged & marked)
        assert tp / det.flagged.sum() >= 0.9 and tp / marked.sum() >= 0.9, cell
        cand = np.flatnonzero(det.hot.candidate)
        assert len(cand) == 1
        peak = np.unravel_index(np.argmax(det.stats.mean_maps()[cand[0]]), (16, 16))
        assert cell[0] <= peak[0] <= cell[0] + 1 and cell[1] <= peak[1] <= cell[1] + 1


def test_no_planted_spot_no_candidate(tmp_path):
    root = tmp_path / "clean"
    write_store(root, 2000, size=16, part=1000, rate=0.0, seed=7)
    det = detect(ResultStore(root))
    assert not det.hot.candidate.any() and not det.flagged.any()


# ---------------------------------------------------------------------------- tables
def test_tables_have_fixed_schemas_and_are_replaced_atomically(small_store, tmp_path):
    root, marked = small_store
    det = detect(ResultStore(root))
    write_detection(tmp_path, det)
    write_detection(tmp_path, det)  # rewritten in place
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clusters.parquet", "flags.parquet"]
    flags = pq.read_table(tmp_path / "flags.parquet")
    clusters = pq.read_table(tmp_path / "clusters.parquet")
    assert flags.schema.equals(flags_schema()) and clusters.schema.equals(clusters_schema())
    assert (
        flags.schema.field("cluster").nullable and flags.schema.field("cluster").type == pa.int32()
    )
    f = flags.to_pydict()
    assert f["rank"] == list(range(1, len(f["id"]) + 1))
    assert all(a >= b for a, b in zip(f["score"], f["score"][1:], strict=False))
    assert set(f["id"]) == set(det.ids[det.flagged]) and min(f["score"]) >= 1
    c = read_table(tmp_path, "clusters.parquet")
    assert sum(c["size"]) == int(np.sum(ResultStore(root).read_rows()["status"] == "ok"))
    assert sum(c["flagged"]) == len(f["id"])
    # empty detection: the files exist, with the schemas, and no rows
    empty = tmp_path / "empty"
    write_detection(empty, detect(ResultStore(tmp_path / "nothing")))
    assert pq.read_table(empty / "flags.parquet").num_rows == 0
    assert pq.read_table(empty / "clusters.parquet").schema.equals(clusters_schema())


# ---------------------------------------------------------------------------- summaries
def test_class_skew_disagreement_and_peak_follow_their_definitions():
    assert summary.peak_location(np.eye(4)[::-1]) == (0.125, 0.875)
    rows = {
        "id": np.asarray(["a", "b", "c", "d", "e", "f"]),
        "label": np.asarray(["cat", "cat", "cat", "dog", "dog", None], dtype=object),
        "prediction": np.asarray([1, 1, 0, 0, 0, 1]),
    }
    mapping = summary.label_to_prediction(rows)
    assert mapping == {"cat": 1, "dog": 0}
    assert summary.disagreement(rows, np.asarray([0, 2, 5]), mapping) == 0.5
    assert summary.disagreement({"id": rows["id"]}, np.asarray([0]), None) is None
    classes = summary.row_classes(rows)
    assert classes.source == "prediction" and classes.names == ["0", "1"]
    no_pred = summary.row_classes({"id": rows["id"], "label": rows["label"]})
    assert no_pred.names == ["cat", "dog"] and no_pred.index.tolist() == [0, 0, 0, 1, 1, -1]


def test_box_detector_is_outside_share_over_threshold():
    rows = {
        "status": np.asarray(["ok", "ok", "ok", "error"]),
        "energy_pointing_game": np.asarray([0.1, 0.5, None, None], dtype=object),
    }
    got = box.box_scores(rows)
    np.testing.assert_allclose(got, [0.9 / box.MAX_OUTSIDE_BOX, 0.0, 0.0, 0.0])
    assert box.box_scores({"status": rows["status"]}) is None


def test_blob_helper_plants_the_requested_share():
    rng = np.random.default_rng(8)
    maps = blob_maps(rng, 10, 16)
    marked = np.ones(10, bool)
    plant_spot(maps, marked, (3, 4), 0.6)
    share = maps[:, 3:5, 4:6].sum((1, 2)) / maps.sum((1, 2))
    assert np.all(share >= 0.6)
