"""The device check (`benchmarks/device_check.sh`) runs on the CPU with tiny sizes, without
TensorFlow or Keras importable, and writes its one JSON with every phase measured."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TINY = [
    "--size", "32", "--stages", "1,1,1,1", "--width", "4", "--classes", "10", "--n", "8",
    "--batch", "4", "--reps", "1", "--audit-n", "6", "--photo", "64x48", "--audit-batch", "4",
    "--decode-n", "5",
]  # fmt: skip


def no_tensorflow_env(tmp_path: Path) -> dict[str, str]:
    """An environment whose Python cannot import TensorFlow or Keras (a ``sitecustomize`` that
    blocks them), like the GPU machines the check is for."""
    block = tmp_path / "block"
    block.mkdir()
    (block / "sitecustomize.py").write_text(
        "import sys\nfor _m in ('tensorflow', 'keras'):\n    sys.modules[_m] = None\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("OUT", "KERAS_BACKEND")}
    env["PYTHONPATH"] = str(block)
    env["PYTHON"] = sys.executable
    env["JAX_PLATFORMS"] = "cpu"
    return env


@pytest.mark.slow
def test_the_device_check_runs_without_tensorflow_and_writes_its_json(tmp_path):
    out = tmp_path / "check.json"
    proc = subprocess.run(
        ["bash", str(ROOT / "benchmarks" / "device_check.sh"), *TINY, "--out", str(out)],
        env=no_tensorflow_env(tmp_path),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    r = json.loads(out.read_text())
    env = r["environment"]
    assert env["backend"] == "cpu" and not env["tensorflow_imported"] and not env["keras_imported"]
    assert set(r["phases"]) == {"fem", "mlfem", "fam", "audit", "decode_threads"}
    fem = r["phases"]["fem"]
    for dtype in ("float32", "bfloat16"):
        row = fem[dtype]
        assert row["fem_images_per_s"]["median"] > 0 and row["forward_images_per_s"]["median"] > 0
        assert row["fem_vs_forward"]["median"] > 0
    assert 0 < fem["bf16_vs_f32_maps"]["mean_abs_diff_over_max"] < 0.1  # bf16 ran, and is close
    assert fem["layer"] == "stage4_block1/conv3"
    assert r["phases"]["mlfem"]["layers"] == [f"stage{s}_block1/conv3" for s in (1, 2, 3, 4)]
    assert r["phases"]["mlfem"]["mlfem_images_per_s"]["median"] > 0
    assert r["phases"]["fam"]["pairs"] == 4 and r["phases"]["fam"]["fam_pairs_per_s"]["median"] > 0
    audit = r["phases"]["audit"]
    assert (audit["processed"], audit["errors"], audit["decode_only_ok"]) == (6, 0, 6)
    assert audit["generated"]["files"] == 6 and audit["audit_images_per_s"] > 0
    assert audit["host_decode_share"] > 0
    assert audit["threads"] == env["default_threads"]
    threads = r["phases"]["decode_threads"]
    assert threads["images"] == 5 and threads["threads_1"]["ms_per_image"] > 0
    assert threads["threads_2"]["vs_threads_1"] > 0
    assert set(r["peak_device_bytes"]) == set(r["phases"])  # null on the CPU (no statistics)


def test_phases_past_the_budget_are_skipped_and_named(tmp_path):
    from benchmarks.device_check import main

    out = tmp_path / "check.json"
    assert main([*TINY, "--budget-s", "0", "--phases", "fem,audit", "--out", str(out)]) == 0
    r = json.loads(out.read_text())
    assert set(r["phases"]) == {"fem", "audit"}
    assert all("over --budget-s" in v["skipped"] for v in r["phases"].values())
    assert r["config"]["stages"] == [1, 1, 1, 1] and r["config"]["photo"] == [64, 48]


@pytest.mark.slow
def test_the_device_check_installs_fastfem_where_the_interpreter_lacks_it(tmp_path):
    """An interpreter without fastfem (this one run with ``-S``: its packages on PYTHONPATH, but
    not the editable install's path hook): the script runs a copy of the checkout's fastfem,
    laid out as installed, and writes nothing in the checkout."""
    import site

    python = tmp_path / "python-without-fastfem"
    python.write_text(f'#!/bin/sh\nexec "{sys.executable}" -S "$@"\n')
    python.chmod(0o755)
    env = no_tensorflow_env(tmp_path)
    env["PYTHON"] = str(python)
    env["PYTHONPATH"] = os.pathsep.join(site.getsitepackages())
    lacks = subprocess.run(
        [str(python), "-c", "import fastfem.converters"], env=env, cwd=ROOT, capture_output=True
    )
    assert lacks.returncode != 0  # the premise: fastfem cannot be imported as it is
    out = tmp_path / "check.json"
    proc = subprocess.run(
        ["bash", str(ROOT / "benchmarks" / "device_check.sh"), *TINY, "--out", str(out)]
        + ["--phases", "fem,audit"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "fastfem not importable" in proc.stderr
    assert not (ROOT / "build").exists()
    r = json.loads(out.read_text())
    assert r["phases"]["audit"]["processed"] == 6 and "error" not in r["phases"]["fem"]
