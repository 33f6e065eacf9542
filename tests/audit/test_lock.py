"""One writer per store: a held lock refuses a second audit naming its holder, a stale lock is
taken over, and two audits started together into one fresh folder lose no row."""

from __future__ import annotations

import fcntl
import json
import os
import socket
import subprocess
import sys
import threading

import numpy as np
import pytest

from fastfem import sample
from fastfem.audit import ResultStore, audit
from fastfem.audit.store.lock import LOCK_FILE, StoreLock, StoreLocked

X = sample.generate("test", n=24).images


def test_a_held_lock_refuses_a_second_writer_naming_the_holder(tmp_path):
    out = tmp_path / "s"
    with StoreLock(out):
        with pytest.raises(StoreLocked) as err:
            audit(X, out=out)
        assert f"pid {os.getpid()} on host {socket.gethostname()}" in str(err.value)
        assert ResultStore(out).part_files() == [] and not (out / "manifest.json").exists()
        with pytest.raises(StoreLocked):
            StoreLock(out).acquire()  # also within one process
    assert not (out / LOCK_FILE).exists()  # released: the file is gone
    assert audit(X, out=out).processed == 24


def dead_pid() -> int:
    proc = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        text=True,
        capture_output=True,
        check=True,
    )
    return int(proc.stdout)


def test_a_stale_lock_is_taken_over_and_reported(tmp_path):
    out = tmp_path / "s"
    out.mkdir()
    holder = {"pid": dead_pid(), "host": socket.gethostname(), "since": "2020-01-01T00:00:00"}
    (out / LOCK_FILE).write_text(json.dumps(holder))  # what a kill -9 leaves: nobody holds it
    with pytest.warns(UserWarning, match=f"took over a stale lock \\(pid {holder['pid']} on"):
        assert audit(X, out=out).processed == 24
    assert not (out / LOCK_FILE).exists()


def test_a_released_lock_is_taken_again_and_a_second_release_is_a_no_op(tmp_path):
    first = StoreLock(tmp_path)
    assert first.acquire() is None and first.held
    first.release()
    second = StoreLock(tmp_path)
    assert second.acquire() is None  # released cleanly: nothing stale
    first.release()  # not held any more: must not drop the second holder's lock
    with pytest.raises(StoreLocked):
        StoreLock(tmp_path).acquire()
    second.release()


def test_a_refused_writer_waits_for_the_holder_to_write_its_name(tmp_path):
    """The holder takes the lock, then writes its name: an audit refused in between must still
    name it (CI once caught "holder unknown" from two audits started together)."""
    tmp_path.joinpath(LOCK_FILE).touch()
    fd = os.open(tmp_path / LOCK_FILE, os.O_RDWR)
    fcntl.flock(fd, fcntl.LOCK_EX)  # held, its name not written yet
    holder = {"pid": 4242, "host": "elsewhere", "since": "2026-01-01T00:00:00"}
    late = threading.Timer(0.3, lambda: os.write(fd, json.dumps(holder).encode()))
    late.start()
    try:
        with pytest.raises(StoreLocked, match="pid 4242 on host elsewhere"):
            StoreLock(tmp_path).acquire()
    finally:
        late.join()
        os.close(fd)


AUDIT = [sys.executable, "-m", "fastfem.cli", "audit", "--batch-size", "16", "--part-size", "16"]


@pytest.mark.slow
def test_two_audits_into_one_fresh_folder_one_refused_no_row_lost(tmp_path):
    np.save(tmp_path / "x.npy", sample.generate("test", n=96).images)
    out = tmp_path / "s"
    env = {**os.environ, "KERAS_BACKEND": "jax", "TF_CPP_MIN_LOG_LEVEL": "3"}
    cmd = [*AUDIT, str(tmp_path / "x.npy"), "--out", str(out), "--quiet"]
    procs = [
        subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    results = [(p.wait(timeout=600), p.stderr.read()) for p in procs]
    codes = sorted(rc for rc, _ in results)
    assert codes == [0, 2], [err[-2000:] for _, err in results]
    refused = next(err for rc, err in results if rc == 2).strip().splitlines()[-1]
    assert refused.startswith("fastfem audit: error: ")
    assert "being written by another audit (pid" in refused or "already holds an audit" in refused
    rows = ResultStore(out).read_rows()
    assert sorted(rows["id"].tolist(), key=int) == [str(i) for i in range(96)]  # every id once
    assert len(ResultStore(out).read_maps()) == 96
