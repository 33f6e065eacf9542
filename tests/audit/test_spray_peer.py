"""SpRAy, the peer the shortcut benchmark sets beside the detectors (`benchmarks.spray`): the
real CoRelAy pipeline per predicted class, its eigengap reading and its oracle-best cluster."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("corelay")

from benchmarks.spray import (  # noqa: E402
    cluster_class,
    eigengap_k,
    flag_scores,
    normalised_maps,
    spray,
    spray_clusterings,
    store_inputs,
)

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "support"))
from synthetic_store import blob_maps, plant_spot  # noqa: E402


def planted(n=240, rate=0.15, seed=0):
    """Maps of objects at random places, a fixed hot spot in ``rate`` of them; 3 classes, the
    marked rows predicted as class 0 (a shortcut the model learned)."""
    rng = np.random.default_rng(seed)
    maps = blob_maps(rng, n, 12)
    marked = rng.random(n) < rate
    plant_spot(maps, marked, (1, 8), 0.5)
    pred = rng.integers(0, 3, n)
    pred[marked] = 0
    return maps, pred, marked


def test_flag_scores_counts_and_edge_cases():
    f = np.array([1, 1, 0, 0, 1], bool)
    t = np.array([1, 0, 1, 0, 1], bool)
    s = flag_scores(f, t)
    assert (s["true_positives"], s["flagged"], s["truth"]) == (2, 3, 3)
    assert s["precision"] == pytest.approx(2 / 3) and s["recall"] == pytest.approx(2 / 3)
    assert s["f1"] == pytest.approx(2 / 3)
    none = flag_scores(np.zeros(5, bool), t)
    assert np.isnan(none["precision"]) and none["recall"] == 0 and none["f1"] == 0
    with pytest.raises(ValueError, match="bool masks of one shape"):
        flag_scores(f, t[:4])
    with pytest.raises(ValueError, match="bool masks"):
        flag_scores(f.astype(int), t)


def test_eigengap_picks_the_largest_gap_in_the_range():
    lam = np.array([0.0, 0.01, 0.02, 0.5, 0.55, 0.6, 0.62, 0.64, 0.95, 0.97])
    assert eigengap_k(lam[::-1], range(2, 9)) == 3  # order of the input does not matter
    assert eigengap_k(lam, range(4, 9)) == 8  # 0.95 - 0.64 beats the others in 4..8
    assert eigengap_k(lam, range(4, 8)) == 4  # 0.05 twice (k = 4, 5): the smaller k
    with pytest.raises(ValueError, match="no gap"):
        eigengap_k(lam[:2], [2])


def test_maps_are_normalised_and_bad_rows_are_left_out():
    maps = np.ones((4, 2, 2), np.float32)
    maps[1] = 0
    maps[2, 0, 0] = np.nan
    x, ok = normalised_maps(maps)
    assert ok.tolist() == [True, False, False, True]
    np.testing.assert_allclose(x[ok].sum(1), 1.0)
    assert np.all(x[~ok] == 0)


def test_shared_embedding_equals_corelays_spectral_clustering_pipeline():
    """Clustering the one embedding for every k is CoRelAy's SpectralClustering pipeline."""
    from corelay.pipeline.spectral import SpectralClustering
    from corelay.processor.clustering import KMeans

    from benchmarks.spray import _pipeline_parts

    maps, _, _ = planted(90)
    x, _ = normalised_maps(maps)
    _, labels = cluster_class(x, [3, 5])
    for k in (3, 5):
        clustering = KMeans(n_clusters=k, kwargs={"random_state": 0, "n_init": 10}, is_output=True)
        (_, _), ref = SpectralClustering(clustering=clustering, **_pipeline_parts(len(x), 0))(x)
        np.testing.assert_array_equal(labels[k], ref)


def test_oracle_finds_the_planted_rows_and_a_shuffled_truth_does_not():
    maps, pred, marked = planted()
    res = spray(maps, pred, marked)
    oracle = res["oracle"]
    assert oracle["class"] == 0 and oracle["f1"] >= 0.6 and oracle["precision"] >= 0.9, oracle
    assert [c["class"] for c in res["classes"]] == [0, 1, 2]
    shuffled = spray(maps, pred, np.random.default_rng(1).permutation(marked))["oracle"]
    assert shuffled["f1"] < oracle["f1"] - 0.3, (shuffled, oracle)
    # the eigengap reading flags one cluster per class, scored by the same function
    flagged = np.zeros(len(maps), bool)
    flagged[res["eigengap"]["row_positions"]] = True
    assert flag_scores(flagged, marked)["f1"] == res["eigengap"]["f1"]
    assert flagged.sum() == sum(c["flagged_rows"] for c in res["classes"])
    assert all(c["flagged_rows"] == min(c["cluster_sizes"]) for c in res["classes"])


def test_rows_that_cannot_be_clustered_are_counted_never_flagged():
    maps, pred, marked = planted()
    pred[:5] = -1  # error rows: no prediction
    maps[5:8] = np.nan
    pred[8:12] = 7  # a class of 4 rows: too small for k up to 8
    clusterings, skipped = spray_clusterings(maps, pred)
    assert skipped == {"no prediction": 5, "map not normalisable": 3, "class too small": 4}
    clustered = np.concatenate([c.rows for c in clusterings])
    assert len(clustered) == len(maps) - 12 and clustered.min() >= 12
    with pytest.raises(ValueError, match=r"truth must be a \(240,\) bool mask"):
        spray(maps, pred, marked[:-1])
    with pytest.raises(ValueError, match="maps must be"):
        spray(maps[0], pred, marked)
    with pytest.raises(ValueError, match="ks must be"):
        spray(maps, pred, marked, ks=[1, 2])


@pytest.mark.slow
def test_spray_on_an_audited_planted_store(tmp_path):
    """A real audit (checker at the top-left, the configuration's trained model, 300 test
    images): SpRAy's oracle-best cluster is mostly the planted rows (precision >= 0.7 with the
    label-leak model; a shuffled truth scores far lower)."""
    from benchmarks.shortcut_data import generate_shortcut
    from benchmarks.shortcut_models import model_path
    from fastfem.audit import audit
    from fastfem.sample import CLASS_NAMES

    model = model_path("checker@top-left", "shapes")
    s = generate_shortcut("checker@top-left", "test", n=300)
    data = tmp_path / "data.npz"
    labels = np.asarray([CLASS_NAMES[i] for i in s.labels])
    np.savez(data, images=s.images, ids=np.asarray(s.ids), labels=labels)
    audit(str(data), model=str(model), out=tmp_path / "store")
    ids, maps, pred = store_inputs(tmp_path / "store")
    order = {rid: i for i, rid in enumerate(s.ids)}
    truth = s.marked[[order[str(r)] for r in ids]]
    res = spray(maps, pred, truth)
    oracle = res["oracle"]
    assert oracle["precision"] >= 0.7 and oracle["f1"] >= 0.4, oracle
    assert res["skipped"] == {"no prediction": 0, "map not normalisable": 0, "class too small": 0}
    shuffled = spray(maps, pred, np.random.default_rng(0).permutation(truth))["oracle"]
    assert shuffled["f1"] < oracle["f1"] - 0.2, (shuffled, oracle)
