"""`fastfem.FAM`: pairs, retrieval, few-shot episodes — against NumPy brute force and the FAM
kernel; batching, streaming, heads, bad input; 4 simulated devices == 1 device."""

import json
import os
from pathlib import Path

import jax
import keras
import numpy as np
import pytest
from fam_models import FakeDataset, conv_extractor, spread_images
from fam_reference import np_fam
from fastfem.converters import from_fn
from subprocess_runs import run_json, simulated_devices

import fastfem
from fastfem.explainers.fam.planning import plan_reference_rows
from fastfem.kernels.fam import SIMILARITIES
from fastfem.kernels.resize import resize_matrices

TESTS_DIR = Path(__file__).parents[1] / "support"


@pytest.fixture(scope="module")
def ext():
    return conv_extractor()


@pytest.fixture(scope="module")
def images():
    return spread_images(40, seed=1)


def np_activations(ext, x):
    return np.asarray(ext.apply(ext.params, x).activations[0], np.float64)


def np_similarities(eq, eg, similarity):
    eq, eg = eq.astype(np.float64), eg.astype(np.float64)
    if similarity == "dot":
        return eq @ eg.T
    if similarity == "cosine":
        n = np.linalg.norm(eq, axis=1)[:, None] * np.linalg.norm(eg, axis=1)[None, :]
        return eq @ eg.T / (n + 1e-8)
    return -((eq[:, None, :] - eg[None, :, :]) ** 2).sum(-1)


def bilinear(m, out_hw):
    rh, rw = resize_matrices(m.shape, out_hw, "bilinear")
    return rh.astype(np.float64) @ m @ rw.T.astype(np.float64)


# ------------------------------------------------------------------------------------ pairs


def test_pairs_match_numpy_reference_with_resize(ext, images):
    q, r = images[:7], images[10:17]
    fam = fastfem.FAM(ext, similarity="dot", normalize="sum", batch_size=4)
    qm, rm = fam.explain(q, r, reference_maps=True)
    assert qm.shape == rm.shape == (7, 16, 16, 1) and qm.dtype == np.float32
    aq, ar = np_activations(ext, q), np_activations(ext, r)
    for i in range(7):
        s, _, _, mq, mr = np_fam(aq[i], ar[i], "gap", "dot", "sum")
        np.testing.assert_allclose(fam.last_similarities[i], s, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(qm[i, ..., 0], bilinear(mq, (16, 16)), atol=1e-5)
        np.testing.assert_allclose(rm[i, ..., 0], bilinear(mr, (16, 16)), atol=1e-5)
    small = fam.explain(q, r, resize=False)
    assert small.shape == (7, 8, 8)
    assert np.ptp(small) > 0.5


def test_keras_model_pairs_one_trace_and_padding(cnn32, images32):
    traces = []
    base = fastfem.converters.from_keras(cnn32, layers="relu_b")

    def apply(params, x):
        traces.append(x.shape)
        return base.apply(params, x)

    wrapped = from_fn(apply, base.params, base.input_shape, base.layer_names)
    fam = fastfem.FAM(wrapped, batch_size=32)
    maps = fam.explain(images32, images32[::-1])  # 70 pairs = 32 + 32 + 6 (padded)
    assert maps.shape == (70, 32, 32, 1)
    # one trace: query and reference of 32 pairs stacked into ONE backbone batch of 64
    assert traces[-1] == (64, 32, 32, 3) and traces.count((64, 32, 32, 3)) == 1, traces
    whole = fastfem.FAM(cnn32, conv_layer="relu_b", batch_size=70).explain(images32, images32[::-1])
    np.testing.assert_allclose(maps, whole, atol=1e-5)


def test_keras_head_equals_jax_function_head(ext, images):
    w = np.random.default_rng(2).normal(size=(8, 5)).astype(np.float32)
    dense = keras.layers.Dense(5, use_bias=False)
    dense.build((None, 8))
    dense.set_weights([w])
    q, r = images[:6], images[6:12]
    fam = fastfem.FAM(ext, head=dense, similarity="dot")
    a = fam.explain(q, r, resize=False)
    b = fastfem.FAM(ext, head=lambda e: e @ w, similarity="dot").explain(q, r, resize=False)
    np.testing.assert_allclose(a, b, atol=1e-6)
    unbuilt = keras.Sequential([keras.layers.Dense(4, activation="relu"), keras.layers.Dense(3)])
    out = fastfem.FAM(ext, head=unbuilt, similarity="euclidean").explain(q, r, resize=False)
    assert out.shape == (6, 8, 8) and np.all(np.isfinite(out))
    proj = fam.embed(images, project=True)
    np.testing.assert_allclose(
        proj, np_activations(ext, images).mean((1, 2)) @ w, rtol=1e-5, atol=1e-6
    )
    # retrieval and episodes with a head rank by the head's outputs (prototype: g(mean e))
    res = fam.explain_retrieval(images[:4], images, top_k=3, resize=False)
    want = np.argsort(-np_similarities(proj[:4], proj, "dot"), axis=1, kind="stable")[:, :3]
    np.testing.assert_array_equal(res.indices, want)
    ep = fam.explain_episode(images[:9], [0, 1, 2] * 3, images[9:15], support_maps=False)
    protos = np.stack([np_activations(ext, images[c:9:3]).mean((0, 1, 2)) for c in range(3)])
    np.testing.assert_array_equal(ep.predictions, (proj[9:15] @ (protos @ w).T).argmax(1))


def test_nonfinite_inputs_raise_naming_the_side_and_index(ext, images):
    q, r = images[:6].copy(), images[6:12].copy()
    r[4, 0, 0, 0] = np.nan
    with pytest.raises(ValueError, match=r"in the references .* index\(es\) 4 \(input\)"):
        fastfem.FAM(ext).explain(q, r)
    with pytest.raises(ValueError, match=r"in the gallery .* index\(es\) 4"):
        fastfem.FAM(ext).explain_retrieval(q, r, top_k=2)


# -------------------------------------------------------------------------------- retrieval


@pytest.mark.parametrize("similarity", SIMILARITIES)
def test_retrieval_equals_numpy_brute_force(ext, images, similarity):
    queries, gallery = images[:6], images[6:]
    fam = fastfem.FAM(ext, similarity=similarity, batch_size=8)
    res = fam.explain_retrieval(queries, gallery, top_k=5, neighbour_maps=True)
    assert res.indices.shape == res.similarities.shape == (6, 5)
    assert res.maps.shape == res.neighbour_maps.shape == (6, 5, 16, 16, 1)
    eq = np_activations(ext, queries).mean((1, 2))
    eg = np_activations(ext, gallery).mean((1, 2))
    sims = np_similarities(eq, eg, similarity)
    want = np.argsort(-sims, axis=1, kind="stable")[:, :5]
    top = np.take_along_axis(sims, want, 1)
    scale = max(1.0, np.abs(top).max())
    np.testing.assert_allclose(res.similarities, top, rtol=1e-5, atol=1e-5 * scale)
    gaps = np.abs(np.diff(np.sort(sims, 1)[:, ::-1][:, :6], axis=1)).min()
    assert gaps > 1e-5 * scale  # no near-ties: the order is decided
    np.testing.assert_array_equal(res.indices, want)
    # the maps are exactly the pair FAMs of (query, neighbour)
    pair_q = np.repeat(queries, 5, axis=0)
    pair_r = gallery[res.indices.ravel()]
    qm, rm = fam.explain(pair_q, pair_r, reference_maps=True)
    np.testing.assert_allclose(res.maps.reshape(qm.shape), qm, atol=1e-5)
    np.testing.assert_allclose(res.neighbour_maps.reshape(rm.shape), rm, atol=1e-5)


def test_retrieval_exclude_self_and_without_resize(ext, images):
    fam = fastfem.FAM(ext)
    res = fam.explain_retrieval(images, images, top_k=3, exclude_self=True, resize=False)
    assert res.maps.shape == (40, 3, 8, 8)
    assert not np.any(res.indices == np.arange(40)[:, None])
    plain = fam.explain_retrieval(images, images, top_k=4)
    np.testing.assert_array_equal(plain.indices[:, 0], np.arange(40))  # itself, cosine 1
    np.testing.assert_array_equal(plain.indices[:, 1:], res.indices)


def test_neighbour_maps_run_the_backbone_once_per_distinct_neighbour(ext, images):
    seen = []

    def apply(params, x):
        seen.append(x.shape[0])
        return ext.apply(params, x)

    counted = from_fn(apply, ext.params, ext.input_shape, ext.layer_names)
    queries = np.repeat(images[:2], 5, axis=0)  # 10 queries, 2 distinct: neighbours repeat
    fam = fastfem.FAM(counted, batch_size=64)
    res = fam.explain_retrieval(queries, images[10:], top_k=3, neighbour_maps=True)
    distinct = np.unique(res.indices).size
    assert distinct <= 6
    # the reference-map step ran once (one traced batch) over rows = distinct neighbours
    plan = plan_reference_rows(res.indices.ravel())
    assert plan.ref.size == distinct and plan.pairs.shape[1] == 8  # 5 pairs/row -> m = 8
    np.testing.assert_allclose(res.neighbour_maps[0], res.neighbour_maps[4], atol=1e-6)


def test_plan_reference_rows_covers_every_pair_once_and_splits_hubs():
    refs = np.array([7, 3, 7, 7, 7, 7, 7, 7, 7, 7, 7, 3, 9])  # 7 is a hub of 10 pairs
    plan = plan_reference_rows(refs, cap=4)
    assert plan.pairs.shape[1] == 4
    np.testing.assert_array_equal(plan.ref, [3, 7, 7, 7, 9])
    used = plan.pairs[plan.pairs >= 0]
    np.testing.assert_array_equal(np.sort(used), np.arange(refs.size))
    for row, ref in zip(plan.pairs, plan.ref, strict=True):
        assert np.all(refs[row[row >= 0]] == ref)


def test_gallery_is_streamed_never_materialised(ext):
    gallery = FakeDataset(2000, seed=5, chunk=100)
    fam = fastfem.FAM(ext, batch_size=64)
    # the embedding step returns embeddings only: activations never leave the device step
    step = fam.embed_step((16, 16, 3))
    spec = jax.ShapeDtypeStruct((64, 16, 16, 3), np.float32)
    shapes = jax.eval_shape(step.fn, step.params, {"x": spec})
    assert {k: v.shape for k, v in shapes.items()} == {
        "embedding": (64, 8),
        "projection": (64, 8),
        "finite": (64, 2),
    }
    queries = spread_images(3, seed=99)
    res = fam.explain_retrieval(queries, gallery, top_k=4)
    assert gallery.passes == 1 and gallery.pulled == 2000  # one streaming pass
    full = gallery.materialise()
    want = fam.explain_retrieval(queries, full, top_k=4)
    np.testing.assert_array_equal(res.indices, want.indices)
    res2 = fam.explain_retrieval(queries, gallery, top_k=4, neighbour_maps=True)
    assert gallery.passes == 4  # +1 (materialise) +2: embeddings, then the neighbours' images
    np.testing.assert_allclose(res2.maps, want.maps, atol=1e-6)


# --------------------------------------------------------------------------------- episodes


@pytest.mark.parametrize("similarity", SIMILARITIES)
def test_episode_equals_numpy_prototype_classifier(ext, images, similarity):
    support, labels = images[:15], np.array([2, 0, 1] * 5)  # 3-way 5-shot
    queries = images[15:27]
    fam = fastfem.FAM(ext, similarity=similarity, batch_size=8)
    ep = fam.explain_episode(support, labels, queries)
    es = np_activations(ext, support).mean((1, 2))
    eq = np_activations(ext, queries).mean((1, 2))
    protos = np.stack([es[labels == c].mean(0) for c in (0, 1, 2)])
    np.testing.assert_allclose(ep.prototypes, protos, rtol=1e-5, atol=1e-6)
    sims = np_similarities(eq, protos, similarity)
    scale = max(1.0, np.abs(sims).max())
    np.testing.assert_allclose(ep.similarities, sims, rtol=1e-5, atol=1e-5 * scale)
    np.testing.assert_array_equal(ep.classes, [0, 1, 2])
    np.testing.assert_array_equal(ep.predictions, sims.argmax(1))
    np.testing.assert_array_equal(ep.targets, ep.predictions)
    assert ep.query_maps.shape == (12, 16, 16, 1)
    assert ep.support_indices.shape == (12, 5) and ep.support_maps.shape == (12, 5, 16, 16, 1)
    for i in range(12):
        np.testing.assert_array_equal(
            np.sort(ep.support_indices[i]), np.flatnonzero(labels == ep.predictions[i])
        )
    # support map of (query i, support s) == the pair (query i, support s)'s reference map
    i, j = 3, 2
    s = ep.support_indices[i, j]
    _, rm = fam.explain(queries[i : i + 1], support[s : s + 1], reference_maps=True)
    np.testing.assert_allclose(ep.support_maps[i, j], rm[0], atol=1e-5)


def test_episode_given_labels_strings_and_unequal_shots(ext, images):
    support = images[:7]
    labels = np.array(["cat", "dog", "cat", "cat", "owl", "dog", "cat"])  # 4/2/1 shots
    queries = images[20:24]
    given = np.array(["owl", "owl", "dog", "cat"])
    fam = fastfem.FAM(ext)
    ep = fam.explain_episode(support, labels, queries, query_labels=given)
    np.testing.assert_array_equal(ep.classes, ["cat", "dog", "owl"])
    np.testing.assert_array_equal(ep.targets, given)
    assert ep.support_indices.shape == (4, 4)
    np.testing.assert_array_equal(ep.support_indices[0], [4, -1, -1, -1])
    assert np.isnan(ep.support_maps[0, 1:]).all() and np.isfinite(ep.support_maps[0, 0]).all()
    assert np.isfinite(ep.support_maps[3]).all()
    # the query map is the pair FAM against the given class prototype (an embedding)
    free = fam.explain_episode(support, labels, queries, support_maps=False)
    assert free.support_maps is None
    assert set(free.predictions) <= {"cat", "dog", "owl"}


# -------------------------------------------------------------------------------- bad input


def test_bad_input(ext, images):
    fam = fastfem.FAM(ext)
    with pytest.raises(ValueError, match="got 5 queries and 4 references"):
        fam.explain(images[:5], images[:4])
    with pytest.raises(ValueError, match="got 150 queries and 149 references"):
        fam.explain(FakeDataset(150), FakeDataset(149))
    with pytest.raises(ValueError, match="top_k=8 but the gallery has only 6 images"):
        fam.explain_retrieval(images[:2], images[:6], top_k=8)
    with pytest.raises(ValueError, match=r"top_k=6 .* only 6 images \(one of them the query"):
        fam.explain_retrieval(images[:6], images[:6], top_k=6, exclude_self=True)
    with pytest.raises(ValueError, match="top_k must be a positive integer"):
        fam.explain_retrieval(images[:2], images[:6], top_k=0)
    with pytest.raises(ValueError, match="exclude_self=True means the queries are the gallery"):
        fam.explain_retrieval(images[:3], images[:6], top_k=2, exclude_self=True)
    with pytest.raises(ValueError, match=r"unknown similarity 'manhattan'; expected one of"):
        fastfem.FAM(ext, similarity="manhattan")
    with pytest.raises(ValueError, match="unknown pooling"):
        fastfem.FAM(ext, pooling="avg")
    with pytest.raises(ValueError, match="unknown normalize"):
        fastfem.FAM(ext, normalize="l2")
    with pytest.raises(TypeError, match="head must be None, a Keras layer/model"):
        fastfem.FAM(ext, head=np.ones((8, 4)))
    with pytest.raises(ValueError, match="queries: .*single image"):
        fam.explain(images[0], images[1])
    with pytest.raises(ValueError, match="references: .*grayscale image where the model expects 3"):
        fam.explain(images[:2], images[:2, ..., :1])
    with pytest.raises(ValueError, match="support_labels must be one label per support image"):
        fam.explain_episode(images[:6], [0, 1, 0], images[6:8])
    with pytest.raises(ValueError, match=r"query_labels \[7\] are not support labels"):
        fam.explain_episode(images[:6], [0, 1] * 3, images[6:8], query_labels=[0, 7])
    with pytest.raises(ValueError, match="query_labels must be one label per query"):
        fam.explain_episode(images[:6], [0, 1] * 3, images[6:8], query_labels=[0])


# ---------------------------------------------------------------------------- bundled model


def test_bundled_model_fam_embedding_is_its_embedding_layer():
    sample = pytest.importorskip("fastfem.sample")
    path = getattr(sample, "MODEL_PATH", None)
    if path is None or not Path(path).exists():
        pytest.skip("the bundled sample model is not built")
    model = keras.saving.load_model(path, compile=False)
    x = sample.generate("test", 8).images
    fam = fastfem.FAM(model)
    assert fam.layer_name == "last_conv"
    want = keras.Model(model.inputs, model.get_layer("embedding").output)(x)
    np.testing.assert_allclose(fam.embed(x), np.asarray(want), rtol=1e-5, atol=1e-6)
    maps = fam.explain(x[:4], x[4:])
    assert maps.shape == (4, 64, 64, 1) and np.ptp(maps) > 0.5


# ------------------------------------------------------------------------- 4 devices == 1


SHARDED = """
import json, os, sys
sys.path.insert(0, sys.argv[1])
import numpy as np, jax
import fastfem
from fam_models import conv_extractor, spread_images
assert jax.device_count() == 4, jax.devices()
ext = conv_extractor()
x = spread_images(30, seed=4)
out = {}
def run(devices):
    fam = fastfem.FAM(ext, batch_size=6, devices=devices)  # 6 -> 8 on 4 devices
    qm, rm = fam.explain(x[:13], x[13:26], reference_maps=True)
    ret = fam.explain_retrieval(x[:9], x, top_k=3, neighbour_maps=True)
    ep = fam.explain_episode(x[:12], [0, 1, 2] * 4, x[12:23])
    runner = fam.runner(fam.embed_step(x.shape[1:]))
    return dict(qm=qm, rm=rm, idx=ret.indices, rmaps=ret.maps, nmaps=ret.neighbour_maps,
                pred=ep.predictions, emaps=ep.query_maps, smaps=ep.support_maps,
                n_devices=runner.n_devices, batch=runner.batch_size)
four, one = run(None), run(jax.devices()[:1])
res = {"n_devices": [four.pop("n_devices"), one.pop("n_devices")],
       "batch": [four.pop("batch"), one.pop("batch")]}
for k in four:
    a, b = np.asarray(four[k], np.float64), np.asarray(one[k], np.float64)
    res[k] = float(np.nanmax(np.abs(a - b)))
print(json.dumps(res))
"""


def test_four_devices_equal_one_device():
    res = run_json(SHARDED, str(TESTS_DIR), env=simulated_devices(4))
    assert res.pop("n_devices") == [4, 1]
    assert res.pop("batch") == [8, 6]
    assert res.pop("idx") == 0 and res.pop("pred") == 0
    for k, diff in res.items():
        assert diff <= 1e-5, (k, diff)


# ---------------------------------------------------------------------------------------- cli


def test_cli_explain_method_fam(tmp_path, capsys):
    sample = pytest.importorskip("fastfem.sample")
    if not sample.MODEL_PATH.exists():
        pytest.skip("the bundled sample model is not built")
    from fastfem.cli import main

    s = sample.generate("test", 10)
    np.save(tmp_path / "x.npy", s.images)
    out = tmp_path / "fam"
    assert (
        main(["explain", str(tmp_path / "x.npy"), "--method", "fam", "--quiet", "--out", str(out)])
        == 0
    )
    summary = json.loads((out / "summary.json").read_text())
    assert summary["method"] == "fam" and summary["layer"] == "last_conv"
    assert summary["reference"] == "nearest neighbour among the others"
    maps = np.load(out / "maps.npy")
    assert maps.shape == (10, 64, 64, 1) and np.ptp(maps) > 0.5
    pairs = json.loads((out / "pairs.json").read_text())
    assert all(p["id"] != p["reference"] for p in pairs)
    assert all(-1 <= p["similarity"] <= 1 for p in pairs)  # cosine
    np.save(tmp_path / "r.npy", s.images[::-1])
    ref = tmp_path / "ref"
    args = ["--references", str(tmp_path / "r.npy"), "--similarity", "dot", "--quiet"]
    assert (
        main(["explain", str(tmp_path / "x.npy"), "--method", "fam", *args, "--out", str(ref)]) == 0
    )
    assert json.loads((ref / "pairs.json").read_text())[0]["reference"] == "0"
    capsys.readouterr()
    assert main(["explain", "--references", "r.npy", "--out", str(tmp_path / "o")]) == 2
    assert "--references is only used by a method that explains pairs" in capsys.readouterr().err


# ------------------------------------------------------------------ 10,000-image gallery memory


def _rss_mib(field):
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return None


class BundledGallery:
    """10,000 bundled images as a lazily iterated (duck-typed) dataset: the 2,000 first train
    images, five times, each pass with its own brightness shift (no exact duplicates)."""

    def __init__(self, base, repeats=5):
        self.base, self.repeats = base, repeats

        class _Spec:
            shape = base.shape[1:]

        self.element_spec = _Spec()

    def as_numpy_iterator(self):
        for k in range(self.repeats):
            for img in self.base:  # one image at a time: the gallery never exists whole
                yield np.clip(img * np.float32(1 - 0.03 * k) + np.float32(0.02 * k), 0, 1)


@pytest.mark.slow
def test_retrieval_over_10000_bundled_images_holds_one_batch_of_activations():
    sample = pytest.importorskip("fastfem.sample")
    if not sample.MODEL_PATH.exists():
        pytest.skip("the bundled sample model is not built")
    if _rss_mib("VmHWM") is None or not os.access("/proc/self/clear_refs", os.W_OK):
        pytest.skip("needs Linux /proc to measure the peak resident memory")
    gallery = BundledGallery(sample.generate("train", 2000).images)
    queries = sample.generate("test", 16).images
    fam = fastfem.FAM(str(sample.MODEL_PATH), batch_size=128)
    fam.explain_retrieval(queries[:2], gallery.base[:300], top_k=2)  # compile, warm up
    base = _rss_mib("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")  # reset the peak (VmHWM) to the current RSS
    res = fam.explain_retrieval(queries, gallery, top_k=5, neighbour_maps=True)
    peak = _rss_mib("VmHWM") - base
    assert res.indices.shape == (16, 5) and res.indices.max() < 10_000
    # all gallery activations (10,000 x 16 x 16 x 64 float32) would be 625 MiB; the images of
    # one pass 469 MiB. One batch of activations is 8 MiB.
    assert peak < 150, f"peak resident memory grew by {peak:.0f} MiB"


KERAS_TF_HEAD = """
import json, os, sys
import numpy as np
import keras
assert keras.backend.backend() == "tensorflow"
import jax
import fastfem
from fastfem.converters import from_fn

rng = np.random.default_rng(0)
w = (rng.normal(size=(3, 3, 3, 8)) * 0.3).astype(np.float32)

def apply(p, x):
    dims = ("NHWC", "HWIO", "NHWC")
    y = jax.lax.conv_general_dilated(x, p, (1, 1), "SAME", dimension_numbers=dims)
    return jax.nn.relu(y)

ext = from_fn(apply, w, (16, 16, 3))
head = keras.Sequential([keras.layers.Dense(6, use_bias=False), keras.layers.ReLU(),
                         keras.layers.Dense(5, use_bias=False)])
head.build((None, 8))
# seeded weights (Keras's initialiser is not): the hidden units active on the >= 0 embedding
w1 = np.abs(rng.normal(size=(8, 6))).astype(np.float32)
w2 = rng.normal(size=(6, 5)).astype(np.float32)
head.set_weights([w1, w2])
x, r = rng.random((6, 16, 16, 3), dtype=np.float32), rng.random((6, 16, 16, 3), dtype=np.float32)
keras_head = fastfem.FAM(ext, head=head)
a = keras_head.explain(x, r)
b = fastfem.FAM(ext, head=lambda e: jax.nn.relu(e @ w1) @ w2).explain(x, r)
print(json.dumps({"diff": float(np.abs(a - b).max()), "range": float(np.ptp(b)),
                  "sims": float(np.abs(keras_head.last_similarities).max())}))
"""


@pytest.mark.slow
def test_keras_head_on_the_tensorflow_backend_is_converted_by_tf2jax():
    res = run_json(KERAS_TF_HEAD, env={"KERAS_BACKEND": "tensorflow"})
    assert res["range"] > 0.5 and res["sims"] > 0
    assert res["diff"] <= 1e-5
