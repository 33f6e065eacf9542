"""Multi-process audits on loopback: a missing peer, a duplicated process id and a process
started with another process count are reported within the timeout, naming the coordinator and
the ids seen; two processes write one store that reads as one table; a resume with nothing left
to do keeps the manifest."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest
from loopback_audit import ENV, audit_command, free_port
from store_readers import assert_one_table

from fastfem import sample


def start(args: list[str]) -> subprocess.Popen:
    cmd = audit_command(args, reliance_sample=32)
    return subprocess.Popen(cmd, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(procs: list[subprocess.Popen], timeout: float = 600) -> list[tuple[int, str, str]]:
    outs = [p.communicate(timeout=timeout) for p in procs]
    return [(p.returncode, out, err) for p, (out, err) in zip(procs, outs, strict=True)]


def last_line(text: str) -> str:
    return text.strip().splitlines()[-1] if text.strip() else ""


def process_args(port: int, count: int, index: int, timeout: float = 60) -> list[str]:
    return [
        "--coordinator",
        f"127.0.0.1:{port}",
        "--num-processes",
        str(count),
        "--process-id",
        str(index),
        "--peer-timeout",
        str(timeout),
    ]


def test_a_missing_peer_is_reported_within_the_timeout(tmp_path):
    port = free_port()
    began = time.monotonic()
    procs = [
        start(["--out", str(tmp_path / "a"), *process_args(port, 2, 0, timeout=3)]),
        # another run's process 1 whose coordinator never comes
        start(["--out", str(tmp_path / "b"), *process_args(free_port(), 2, 1, timeout=3)]),
    ]
    (rc0, _, err0), (rc1, _, err1) = finish(procs, timeout=120)
    elapsed = time.monotonic() - began
    assert rc0 == 2 and rc1 == 2, (err0[-2000:], err1[-2000:])
    assert "Traceback" not in err0 + err1
    assert last_line(err0) == (
        f"fastfem audit: error: multi-process audit failed to start (coordinator "
        f"127.0.0.1:{port}, 2 processes): within 3 s only process ids [0] arrived; missing [1]"
    )
    assert "process 1: the coordinator is unreachable" in last_line(err1)
    assert "within 3 s" in last_line(err1)
    assert elapsed < 60, elapsed  # imports included; JAX alone waits 300 s, then aborts
    assert not (tmp_path / "a").exists()  # nothing written


def test_a_duplicated_process_id_is_reported_by_every_process(tmp_path):
    port = free_port()
    out = str(tmp_path / "s")
    procs = [start(["--out", out, *process_args(port, 3, i)]) for i in (0, 1, 1)]
    results = finish(procs, timeout=120)
    lines = {last_line(err) for _, _, err in results}
    assert [rc for rc, _, _ in results] == [2, 2, 2], [err[-2000:] for _, _, err in results]
    assert len(lines) == 1, lines  # every process reports the coordinator's verdict
    line = lines.pop()
    assert line.startswith(
        f"fastfem audit: error: multi-process audit failed to start (coordinator "
        f"127.0.0.1:{port}, 3 processes): process id 1 claimed twice (host "
    )
    assert line.endswith("; ids seen [0, 1, 1]")
    assert not Path(out).exists()


def test_a_process_with_another_process_count_is_reported_by_both(tmp_path):
    port = free_port()
    out = str(tmp_path / "s")
    procs = [
        start(["--out", out, *process_args(port, 2, 0)]),
        start(["--out", out, *process_args(port, 3, 1)]),  # started for a run of 3
    ]
    results = finish(procs, timeout=120)
    assert [rc for rc, _, _ in results] == [2, 2], [err[-2000:] for _, _, err in results]
    for _, _, err in results:
        line = last_line(err)
        assert "Traceback" not in err
        assert line.startswith(
            f"fastfem audit: error: multi-process audit failed to start (coordinator "
            f"127.0.0.1:{port}, 2 processes): process 1 (host "
        ), line
        assert "was started with num_processes=3; ids seen [0, 1]" in line, line
    assert not Path(out).exists()


def png_folder(root: Path) -> Path:
    folder = root / "pngs"
    sample.write_png_folder(sample.generate("test", n=60), folder)
    (folder / "zz_bad").mkdir()
    (folder / "zz_bad" / "empty.png").write_bytes(b"")
    (folder / "zz_bad" / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\nnot a png" * 3)
    return folder


@pytest.mark.slow
def test_two_processes_write_one_table_and_a_no_op_resume_keeps_the_manifest(tmp_path):
    folder = png_folder(tmp_path)
    out = tmp_path / "store"
    common = [str(folder), "--out", str(out), "--batch-size", "8", "--part-size", "8"]
    port = free_port()
    results = finish([start([*common, *process_args(port, 2, i)]) for i in (0, 1)])
    for rc, _, err in results:
        assert rc == 0, err[-3000:]
    summaries = [json.loads(out_) for _, out_, _ in results]
    assert sorted(s["processed"] for s in summaries) == [31, 31]
    assert all(s["compile_seconds"] > 0 for s in summaries)
    parts = sorted(p.name for p in (out / "parts").iterdir())
    assert {p[:9] for p in parts} == {"part-p000", "part-p001"} and len(parts) >= 6
    table = assert_one_table(out)  # pyarrow.dataset, pandas and DuckDB: one table
    assert len(table["id"]) == 62 and len(set(table["id"])) == 62
    assert sum(e is not None for e in table["error"]) == 2
    first = json.loads((out / "manifest.json").read_text())
    assert first["process_count"] == 2 and first["counts"]["rows"] == 62
    # the detectors ran once (process 0); every process's summary reports the store's flags
    import pyarrow.parquet as pq

    flagged = pq.read_table(out / "flags.parquet").column("id").to_pylist()
    for s in summaries:
        assert s["flagged_total"] == len(flagged) == first["counts"]["flagged"]
        assert s["flagged"] == flagged[:20] and s["flag_rule"].startswith("hot spot")

    port = free_port()
    again = finish([start([*common, "--resume", *process_args(port, 2, i)]) for i in (0, 1)])
    for rc, out_, err in again:
        assert rc == 0, err[-3000:]
        assert json.loads(out_)["message"].startswith("nothing to do")
    after = json.loads((out / "manifest.json").read_text())
    for key in ("model", "model_sha256", "layer", "method", "config", "source", "counts"):
        assert after[key] == first[key], key
    assert after["last_run"]["processed"] == 0 and after["parts"] == first["parts"]


def test_a_process_started_with_another_configuration_stops_the_run(tmp_path):
    import numpy as np

    np.save(tmp_path / "x.npy", sample.generate("test", n=8).images)
    out = tmp_path / "store"
    port = free_port()
    common = [str(tmp_path / "x.npy"), "--out", str(out)]
    procs = [
        start([*common, *process_args(port, 2, 0)]),
        start([*common, "--k", "3", *process_args(port, 2, 1)]),
    ]
    (rc0, _, err0), (rc1, _, err1) = finish(procs, timeout=300)
    assert (rc0, rc1) == (2, 2), (err0[-2000:], err1[-2000:])
    mismatch = (
        f"process 1: {out} holds an audit of another configuration (config.k: 2.0 in the "
        "store, 3.0 requested)"
    )
    assert last_line(err1).startswith(f"fastfem audit: error: {mismatch}")
    assert last_line(err0).startswith(
        f"fastfem audit: error: process 1 of 2 failed at 'config' (coordinator "
        f"127.0.0.1:{port}): ConfigMismatch: {mismatch}"
    )
    assert not (out / "parts").exists()  # nobody wrote a row


def test_the_cli_names_a_wrong_process_option(tmp_path, capsys):
    from fastfem.cli import main

    out = ["--out", str(tmp_path / "s")]
    assert main(["audit", "--coordinator", "127.0.0.1:1234", *out]) == 2
    assert capsys.readouterr().err.strip() == (
        "fastfem audit: error: --coordinator, --num-processes and --process-id go together"
    )
    ids = ["--coordinator", "127.0.0.1:1234", "--num-processes", "2", "--process-id", "5"]
    assert main(["audit", *ids, *out]) == 2
    assert capsys.readouterr().err.strip() == (
        "fastfem audit: error: process_id must be in [0, num_processes); got process_id=5, "
        "num_processes=2"
    )
    for option, value in (("--process-id", "-1"), ("--peer-timeout", "0")):
        with pytest.raises(SystemExit) as err:
            main(["audit", option, value, *out])
        assert err.value.code == 2 and repr(value) in capsys.readouterr().err
    assert not (tmp_path / "s").exists()
