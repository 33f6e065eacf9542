"""The manifest: written first with the full configuration, merged (never replaced), and
``--resume`` refuses another configuration naming the difference; missing or short maps are
recomputed on resume."""

from __future__ import annotations

import json

import numpy as np
import pytest
from tiny_models import randomize_weights, small_cnn

from fastfem import sample
from fastfem.audit import ResultStore, audit
from fastfem.audit.store.manifest import ConfigMismatch, differences, merge, model_sha256
from fastfem.cli import main

X = sample.generate("test", n=40).images


def manifest(out) -> dict:
    return json.loads((out / "manifest.json").read_text())


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """40 bundled images audited with the defaults (k=2, xplique, last_conv), 3 parts."""
    out = tmp_path_factory.mktemp("manifest") / "s"
    np.save(out.parent / "x.npy", X)
    audit(out.parent / "x.npy", out=out, batch_size=16, part_size=16)
    return out


def state(out) -> tuple[dict, dict]:
    """The store's manifest and its parts' bytes (what a refused resume must not change)."""
    parts = {p.name: p.read_bytes() for p in ResultStore(out).part_files()}
    return manifest(out), parts


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"variant": "gradcam"}, "config.variant: 'xplique' in the store, 'gradcam' requested"),
        ({"k": 3.0}, "config.k: 2.0 in the store, 3.0 requested"),
        ({"layer": "conv2"}, "layer: 'last_conv' in the store, 'conv2' requested"),
        ({"preprocess": "raw"}, "config.preprocess: 'unit' in the store, 'raw' requested"),
    ],
)
def test_resume_with_another_configuration_is_refused_naming_it(store, change, named):
    before = state(store)
    with pytest.raises(ConfigMismatch) as err:
        audit(store.parent / "x.npy", out=store, resume=True, **change)
    assert named in str(err.value)
    assert state(store) == before  # nothing written, nothing mixed


def test_resume_with_another_model_file_is_refused(store, tmp_path):
    import keras

    path = tmp_path / "retrained.keras"  # the same architecture and layer names, other weights
    randomize_weights(keras.saving.load_model(sample.MODEL_PATH), seed=1).save(path)
    with pytest.raises(ConfigMismatch) as err:
        audit(store.parent / "x.npy", model=path, out=store, resume=True)
    diff = str(err.value).split("(", 1)[1]
    assert diff.startswith("model_sha256: '") and "layer" not in diff and "config" not in diff


def test_the_cli_refuses_in_one_line_with_exit_code_2(store, capsys):
    args = ["audit", str(store.parent / "x.npy"), "--out", str(store), "--resume", "--quiet"]
    assert main([*args, "--k", "3"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("fastfem audit: error: --resume: ")
    assert "config.k: 2.0 in the store, 3.0 requested" in err[0]
    # a different batch size does not change a row: accepted (nothing left to do)
    assert main([*args, "--batch-size", "8"]) == 0
    assert '"nothing to do' in capsys.readouterr().out


def test_no_op_resume_keeps_what_the_manifest_recorded(store):
    first = manifest(store)
    for key in ("model", "model_sha256", "layer", "method", "config", "source", "columns"):
        assert first.get(key), key
    again = audit(store.parent / "x.npy", out=store, resume=True, batch_size=8)
    assert again.processed == 0 and "nothing to do" in again.message
    after = manifest(store)
    for key in ("model", "model_sha256", "layer", "method", "source", "columns", "counts"):
        assert after[key] == first[key], key
    assert after["config"] == {**first["config"], "batch_size": 8}
    assert after["last_run"]["processed"] == 0


class Interrupted(Exception):
    pass


def test_the_manifest_is_written_before_the_first_part(tmp_path):
    def batches():
        yield X[:16]
        raise Interrupted  # the run dies after one batch

    out = tmp_path / "s"
    with pytest.raises(Interrupted):
        audit(batches(), out=out, batch_size=16, part_size=16)
    written = manifest(out)
    assert written["layer"] == "last_conv" and written["config"]["k"] == 2.0
    assert written["model_sha256"] == model_sha256(sample.MODEL_PATH)
    assert "counts" not in written and not (out / "audit.lock").exists()
    # the resume of that store is checked against it
    with pytest.raises(ConfigMismatch, match="config.k"):
        audit(iter([X]), out=out, resume=True, k=1.0)


def test_parts_that_cannot_be_read_back_are_recomputed_on_resume(tmp_path):
    np.save(tmp_path / "x.npy", X)
    ref = tmp_path / "ref"
    audit(tmp_path / "x.npy", out=ref, batch_size=8, part_size=8)
    out = tmp_path / "s"
    audit(tmp_path / "x.npy", out=out, batch_size=8, part_size=8)
    store = ResultStore(out)
    parts = store.part_files()
    assert len(parts) == 5
    store.maps_path(parts[0]).unlink()  # maps deleted
    parts[2].write_bytes(parts[2].read_bytes()[:100])  # Parquet file cut short
    np.save(store.maps_path(parts[4]), np.load(store.maps_path(parts[4]))[:3])  # maps short
    with pytest.raises(FileNotFoundError, match="maps-p000-000000.npy is missing"):
        store.read_maps()
    with pytest.warns(UserWarning, match="3 committed parts cannot be read back whole"):
        summary = audit(tmp_path / "x.npy", out=out, batch_size=8, part_size=8, resume=True)
    assert summary.processed == 3 * 8 and summary.skipped_already_committed == 2 * 8
    set_aside = manifest(out)["set_aside"]
    assert sorted(set_aside) == [parts[0].name, parts[2].name, parts[4].name]
    assert "maps-p000-000000.npy is missing" in set_aside[parts[0].name]
    assert "Parquet file is unreadable" in set_aside[parts[2].name]
    assert "(3, 16, 16), not 8 maps" in set_aside[parts[4].name]
    assert sorted(p.name for p in (out / "invalid").iterdir()) == sorted(
        [parts[0].name, parts[2].name, parts[4].name, "maps-p000-000002.npy"]
        + ["maps-p000-000004.npy"]
    )
    rows, maps = store.read_rows(), store.read_maps()
    ref_rows, ref_maps = ResultStore(ref).read_rows(), ResultStore(ref).read_maps()
    order, ref_order = np.argsort(rows["id"].astype(int)), np.argsort(ref_rows["id"].astype(int))
    assert rows["id"][order].tolist() == [str(i) for i in range(40)]  # every id once
    np.testing.assert_allclose(maps[order], ref_maps[ref_order], atol=1e-6)


# ---------------------------------------------------------------------------- pure functions


def test_differences_compare_what_a_row_depends_on():
    stored = {
        "model_sha256": "a",
        "layer": "l",
        "method": "fem",
        "config": {"k": 2.0, "variant": "xplique", "batch_size": 256},
    }
    same = {**stored, "config": {"k": 2, "variant": "xplique", "batch_size": 8, "fit": "crop"}}
    assert differences(stored, same) == []  # batch size: runtime; fit: unknown to the store
    other = {**stored, "layer": "m", "config": {"k": 3.0, "variant": "xplique"}}
    assert differences(stored, other) == [
        "config.k: 2.0 in the store, 3.0 requested",
        "layer: 'l' in the store, 'm' requested",
    ]
    assert differences({**stored, "model_sha256": None}, {**stored, "model_sha256": "b"}) == []


def test_merge_keeps_every_old_key():
    old = {"model": "m", "config": {"k": 2.0, "classes": ["a"]}, "counts": {"rows": 3}}
    new = {"config": {"batch_size": 8}, "counts": {"rows": 5}, "finished": "t"}
    assert merge(old, new) == {
        "model": "m",
        "config": {"k": 2.0, "classes": ["a"], "batch_size": 8},
        "counts": {"rows": 5},
        "finished": "t",
    }


def test_model_sha256_is_the_hash_of_the_bytes(tmp_path):
    import hashlib

    assert (
        model_sha256(sample.MODEL_PATH)
        == hashlib.sha256(sample.MODEL_PATH.read_bytes()).hexdigest()
    )
    a, b = small_cnn(seed=0), small_cnn(seed=1)
    assert model_sha256(a) == model_sha256(a) != model_sha256(b)
    assert model_sha256(tmp_path / "missing.keras") is None and model_sha256(object()) is None


def test_speed_is_reported_after_compilation_in_summary_manifest_and_report(tmp_path):
    import keras

    from fastfem.audit.report.page import write_report

    model = keras.saving.load_model(sample.MODEL_PATH)  # an object: compiled afresh
    x = sample.generate("test", n=96).images
    summary = audit(x, model=model, out=tmp_path / "s", batch_size=16)
    steady = summary.seconds - summary.compile_seconds
    assert summary.processed == 96 and summary.compile_seconds > 0
    assert summary.images_per_second == pytest.approx(96 / steady, rel=0.02)
    # the compiled step is kept by the explainer: a second audit through it compiles nothing
    # (batch 24: a step no other test compiled in this process)
    again = audit(x, model=str(sample.MODEL_PATH), out=tmp_path / "t", batch_size=24)
    repeat = audit(x, model=str(sample.MODEL_PATH), out=tmp_path / "u", batch_size=24)
    assert again.compile_seconds > 0 and repeat.compile_seconds == 0
    assert repeat.images_per_second == pytest.approx(96 / repeat.seconds, rel=0.02)
    last_run = manifest(tmp_path / "s")["last_run"]
    assert last_run["images_per_second"] == summary.images_per_second
    assert last_run["compile_seconds"] == summary.compile_seconds
    page = write_report(tmp_path / "s").read_text()
    assert f"{summary.images_per_second} images/s after compilation" in page
