"""The result store reads as ONE table with pyarrow.dataset, pandas and DuckDB: several parts,
error rows in some parts only; a full disk stops the audit with one line, keeping what is
committed."""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from store_readers import assert_one_table
from subprocess_runs import run_python

from fastfem import sample
from fastfem.audit import ResultStore, audit
from fastfem.audit.store.schema import store_schema


def png_folder_with_bad_files(root: Path, n: int = 40) -> Path:
    """``n`` sample PNGs in class folders, then (sorted last) an empty and a corrupt file."""
    folder = root / "pngs"
    sample.write_png_folder(sample.generate("test", n=n), folder)
    (folder / "zz_bad").mkdir()
    (folder / "zz_bad" / "empty.png").write_bytes(b"")
    (folder / "zz_bad" / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\nnot a png" * 3)
    return folder


def errors_per_part(out: Path) -> list[int]:
    return [
        pq.read_table(p, columns=["error"]).column("error").null_count * -1
        + pq.read_metadata(p).num_rows
        for p in ResultStore(out).part_files()
    ]


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return png_folder_with_bad_files(tmp_path_factory.mktemp("readers"))


def test_three_readers_read_every_part_as_one_table(folder, tmp_path):
    out = tmp_path / "store"
    summary = audit(folder, out=out, batch_size=8, part_size=16)
    assert summary.ok == 40 and summary.errors == 2
    counts = errors_per_part(out)
    assert len(counts) >= 3 and 0 in counts and max(counts) == 2, counts  # errors in one part
    schema = store_schema(list(json.loads((out / "manifest.json").read_text())["columns"]))
    for p in ResultStore(out).part_files():
        assert pq.read_schema(p).remove_metadata().equals(schema), p.name
    table = assert_one_table(out)
    assert len(table["id"]) == 42 and table["id_raw"] == [None] * 42
    errors = {i: e for i, e in zip(table["id"], table["error"], strict=True) if e}
    assert set(errors) == {"zz_bad/empty.png", "zz_bad/corrupt.png"}
    assert "empty file" in errors["zz_bad/empty.png"]


FULL_DISK = """
import resource, signal, sys
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG
limit = int(sys.argv[1])
resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
from fastfem.cli import main
sys.exit(main(sys.argv[2:]))
"""


def fingerprints(out: Path) -> dict[str, str]:
    return {
        str(p.relative_to(out)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(out.rglob("*"))
        if p.is_file() and p.parent.name in ("parts", "maps")
    }


def test_a_full_disk_stops_the_audit_in_one_line_keeping_what_is_committed(tmp_path):
    x = sample.generate("test", n=96).images
    np.save(tmp_path / "first.npy", x[:48])
    np.save(tmp_path / "all.npy", x)
    out = tmp_path / "store"
    audit(tmp_path / "first.npy", out=out, batch_size=16, part_size=16)  # 3 parts of 16 maps
    committed = fingerprints(out)
    args = ["audit", str(tmp_path / "all.npy"), "--out", str(out), "--resume", "--quiet"]
    # a file limit of 24 kB: a part of 32 maps (32 kB) cannot be written, the manifest can
    proc = run_python(
        FULL_DISK,
        "24000",
        *args,
        "--part-size",
        "32",
        "--batch-size",
        "16",
        env={"FASTFEM_COMPILE_CACHE": "0"},
    )
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert re.fullmatch(
        rf"fastfem audit: error: cannot write the result store: {re.escape(str(out))}/maps/"
        r"maps-p000-000003\.npy: File too large",
        last,
    ), last
    assert fingerprints(out) == committed  # the committed parts, untouched; no new maps
    leftovers = [p.name for p in out.rglob("*") if ".tmp-" in p.name]
    assert leftovers == [] and not (out / "audit.lock").exists()
    assert len(ResultStore(out).committed_ids()) == 48
    # with room again, the resume completes: every id once
    done = audit(tmp_path / "all.npy", out=out, batch_size=16, part_size=32, resume=True)
    assert done.processed == 48
    assert sorted(ResultStore(out).read_rows()["id"].tolist(), key=int) == [
        str(i) for i in range(96)
    ]


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into a read-only folder")
def test_a_read_only_store_is_refused_in_one_line(tmp_path, capsys):
    from fastfem.cli import main

    x = sample.generate("test", n=8).images
    np.save(tmp_path / "x.npy", x)
    out = tmp_path / "store"
    audit(tmp_path / "x.npy", out=out)
    committed = fingerprints(out)
    for d in (out, out / "parts", out / "maps"):
        d.chmod(0o555)
    try:
        assert main(["audit", str(tmp_path / "x.npy"), "--out", str(out), "--resume"]) == 2
    finally:
        for d in (out, out / "parts", out / "maps"):
            d.chmod(0o755)
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        f"fastfem audit: error: cannot write the result store: {out}/audit.lock: Permission denied"
    ]
    assert fingerprints(out) == committed
