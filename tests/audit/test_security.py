"""Nothing placed in or beside a result store redirects a write, runs script in the report, or
mixes configurations: one test per attack (links planted at every name the store writes, a
report write that fails, hostile strings in every field, a lost manifest, another source, a
copied part, odd --out values, a malformed manifest, a report while an audit writes)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from fastfem import sample
from fastfem.audit import ResultStore, audit
from fastfem.audit.report.page import write_report
from fastfem.audit.store.lock import StoreLock
from fastfem.audit.store.manifest import PART_CONFIG_SHA256, ConfigMismatch
from fastfem.audit.store.safe_write import (
    StoreError,
    atomic_write_bytes,
    temporary,
    write_table_atomic,
)
from fastfem.audit.store.schema import store_schema
from fastfem.audit.store.writer import PartWriter
from fastfem.cli import main
from fastfem.data.records import Record

X = sample.generate("test", n=24).images
VICTIM = b"a file outside the store that nothing may change\n"


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """24 bundled images audited from x.npy, batches of 16, --part-size 10."""
    base = tmp_path_factory.mktemp("security")
    np.save(base / "x.npy", X)
    assert main(_audit_args(base / "x.npy", base / "s", "--part-size", "10")) == 0
    return base / "s"


def _audit_args(source, out, *extra) -> list[str]:
    return ["audit", str(source), "--batch-size", "16", "--quiet", "--out", str(out), *extra]


def _copy(store: Path, tmp_path: Path) -> Path:
    out = tmp_path / "s"
    shutil.copytree(store, out, symlinks=True)
    return out


def _victim(tmp_path: Path) -> Path:
    path = tmp_path / "victim.txt"
    path.write_bytes(VICTIM)
    return path


def _state(out: Path) -> dict[str, bytes]:
    """Every file of a store (what a refused run must not change)."""
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "Traceback" not in err, err
    return err


# ------------------------------------------------------------------ no write through a link


def test_the_part_size_is_exact_whatever_the_batch(store):
    """--part-size 10 with batches of 16: parts of 10, 10 and the rest (4)."""
    rows = [pq.ParquetFile(p).metadata.num_rows for p in ResultStore(store).part_files()]
    assert rows == [10, 10, 4]
    maps = [
        np.load(ResultStore(store).maps_path(p)).shape[0] for p in ResultStore(store).part_files()
    ]
    assert maps == rows


def test_the_part_writer_splits_a_batch_at_the_part_size(tmp_path):
    schema = store_schema(["id", "status", "error", "score"], {"score": "double"})
    writer = PartWriter(ResultStore(tmp_path / "s"), schema, (1, 1), part_size=100)
    recs = [Record(f"r{i:03d}") for i in range(256)]
    out = {"map": np.zeros((256, 1, 1)), "score": np.arange(256.0)}
    writer.add_batch(recs, out, [None] * 256)
    writer.commit()
    store = ResultStore(tmp_path / "s")
    assert [pq.ParquetFile(p).metadata.num_rows for p in store.part_files()] == [100, 100, 56]
    assert store.read_rows()["id"].tolist() == [r.id for r in recs]
    assert store.read_maps().shape == (256, 1, 1)


@pytest.mark.parametrize("planted", ["final", "temporary"])
def test_atomic_writes_replace_a_planted_link_never_write_through_it(tmp_path, planted):
    import pyarrow as pa

    victim = _victim(tmp_path)
    folder = tmp_path / "store"
    folder.mkdir()
    for name in ("manifest.json", "flags.parquet"):
        path = folder / name
        (path if planted == "final" else temporary(path)).symlink_to(victim)
    atomic_write_bytes(folder / "manifest.json", b"{}\n")
    write_table_atomic(folder / "flags.parquet", pa.table({"id": ["a"]}))
    assert victim.read_bytes() == VICTIM
    assert not (folder / "manifest.json").is_symlink()
    assert (folder / "manifest.json").read_bytes() == b"{}\n"
    assert pq.read_table(folder / "flags.parquet").column("id").to_pylist() == ["a"]
    assert sorted(p.name for p in folder.iterdir()) == ["flags.parquet", "manifest.json"]


def test_a_hard_link_at_a_final_name_is_replaced_not_written(tmp_path):
    victim = _victim(tmp_path)
    (tmp_path / "store").mkdir()
    os.link(victim, tmp_path / "store" / "manifest.json")
    atomic_write_bytes(tmp_path / "store" / "manifest.json", b"{}")
    assert victim.read_bytes() == VICTIM


def test_a_linked_folder_inside_the_store_is_refused(tmp_path):
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (tmp_path / "s").mkdir()
    (tmp_path / "s" / "parts").symlink_to(outside, target_is_directory=True)
    schema = store_schema(["id", "status", "error"])
    writer = PartWriter(ResultStore(tmp_path / "s"), schema, (1, 1), part_size=1)
    with pytest.raises(StoreError, match="parts is a symbolic link"):
        writer.add_errors([(Record("a"), "bad")])
    assert list(outside.iterdir()) == []


@pytest.mark.parametrize("kind", ["symlink", "hardlink", "dangling"])
def test_a_lock_file_link_is_removed_never_written_through(tmp_path, kind):
    victim = _victim(tmp_path)
    (tmp_path / "s").mkdir()
    lock_path = tmp_path / "s" / "audit.lock"
    if kind == "symlink":
        lock_path.symlink_to(victim)
    elif kind == "hardlink":
        os.link(victim, lock_path)
    else:
        lock_path.symlink_to(tmp_path / "created-outside")
    with StoreLock(tmp_path / "s") as lock:
        assert lock.held and not lock_path.is_symlink()
        assert json.loads(lock_path.read_text())["pid"] == os.getpid()
    assert victim.read_bytes() == VICTIM and not (tmp_path / "created-outside").exists()


def test_an_audit_into_a_store_full_of_links_writes_nothing_outside(tmp_path):
    """Links at the lock, a maps shard, the flags and the clusters of a new store: the audit
    replaces each, the file they point to stays byte-identical."""
    victim = _victim(tmp_path)
    out = tmp_path / "s"
    (out / "maps").mkdir(parents=True)
    for name in ("audit.lock", "maps/maps-p000-000000.npy", "flags.parquet", "clusters.parquet"):
        (out / name).symlink_to(victim)
    np.save(tmp_path / "x.npy", X[:8])
    assert main(_audit_args(tmp_path / "x.npy", out)) == 0
    assert victim.read_bytes() == VICTIM
    assert not any(p.is_symlink() for p in out.rglob("*"))
    assert len(ResultStore(out).read_rows()["id"]) == 8


def test_a_report_link_is_replaced_and_the_target_kept(store, tmp_path):
    out = _copy(store, tmp_path)
    victim = _victim(tmp_path)
    (out / "report.html").symlink_to(victim)
    assert main(["report", str(out)]) == 0
    assert victim.read_bytes() == VICTIM
    assert not (out / "report.html").is_symlink()
    assert "<title>fastfem audit report</title>" in (out / "report.html").read_text()


def test_a_failed_report_write_keeps_the_old_report_and_names_the_path(store, tmp_path):
    """The file-size limit (standing in for a full disk) stops the write: the complete old
    report stays, no temporary file is left, the one-line error names the path."""
    out = _copy(store, tmp_path)
    old = b"<!doctype html><p>the complete old report</p>\n"
    (out / "report.html").write_bytes(old)
    code = (
        "import resource, signal, sys\n"
        "from fastfem.cli import main\n"
        "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
        "resource.setrlimit(resource.RLIMIT_FSIZE, (20000, 20000))\n"
        f"sys.exit(main(['report', {str(out)!r}]))\n"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert run.returncode == 2, run.stderr
    err = run.stderr.strip()
    assert err.count("\n") == 0 and str(out / "report.html") in err, err
    assert (out / "report.html").read_bytes() == old
    assert sorted(p.name for p in out.iterdir() if p.name.startswith(".")) == []


# ------------------------------------------------------------- the configuration with the data


def test_every_part_records_the_configuration_hash(store):
    manifest = json.loads((store / "manifest.json").read_text())
    for p in ResultStore(store).part_files():
        meta = pq.read_schema(p).metadata
        assert len(meta[PART_CONFIG_SHA256]) == 64
    from fastfem.audit.store.manifest import config_sha256

    assert meta[PART_CONFIG_SHA256].decode() == config_sha256(manifest)


@pytest.mark.parametrize("lose", ["file", "config"])
def test_resume_of_another_k_with_the_manifest_lost_is_refused_untouched(store, tmp_path, lose):
    out = _copy(store, tmp_path)
    if lose == "file":
        (out / "manifest.json").unlink()
    else:
        body = json.loads((out / "manifest.json").read_text())
        del body["config"]
        (out / "manifest.json").write_text(json.dumps(body))
    before = _state(out)
    with pytest.raises(ConfigMismatch, match=r"recorded in its parts \(config.k: 2.0"):
        audit(store.parent / "x.npy", out=out, k=3.0, resume=True)
    with pytest.raises(ConfigMismatch, match="layer: 'last_conv' in the store, 'conv2'"):
        audit(store.parent / "x.npy", out=out, layer="conv2", resume=True)
    assert _state(out) == before  # no part of another map shape, nothing written


def test_a_lost_manifest_is_rebuilt_from_the_parts(store, tmp_path):
    out = _copy(store, tmp_path)
    original = json.loads((out / "manifest.json").read_text())
    (out / "manifest.json").unlink()
    with pytest.warns(UserWarning, match="rebuilt from the parts"):
        summary = audit(store.parent / "x.npy", out=out, batch_size=16, resume=True)
    assert summary.skipped_already_committed == 24 and summary.processed == 0
    rebuilt = json.loads((out / "manifest.json").read_text())
    for key in ("model_sha256", "layer", "method", "config", "columns", "source"):
        assert rebuilt[key] == original[key], key
    assert rebuilt["manifest_rebuilt_from_parts"] is True


def test_parts_of_different_configurations_are_refused(store, tmp_path):
    other = tmp_path / "other"
    audit(store.parent / "x.npy", out=other, batch_size=16, part_size=10, k=3.0)
    out = _copy(store, tmp_path)
    part = ResultStore(other).part_files()[0]
    shutil.copy(part, out / "parts" / "part-p000-000009.parquet")
    shutil.copy(ResultStore(other).maps_path(part), out / "maps" / "maps-p000-000009.npy")
    with pytest.raises(ConfigMismatch, match="different configurations .*config.k: 2.0"):
        audit(store.parent / "x.npy", out=out, resume=True)


def test_parts_without_a_configuration_and_no_manifest_are_refused(store, tmp_path):
    out = _copy(store, tmp_path)
    (out / "manifest.json").unlink()
    part = ResultStore(out).part_files()[0]
    pq.write_table(pq.read_table(part).replace_schema_metadata(None), part)
    with pytest.raises(ConfigMismatch, match="cannot be verified"):
        audit(store.parent / "x.npy", out=out, resume=True)


def test_an_altered_part_configuration_is_refused(store, tmp_path):
    out = _copy(store, tmp_path)
    part = ResultStore(out).part_files()[1]
    table = pq.read_table(part)
    meta = dict(table.schema.metadata)
    meta[b"fastfem.config"] = meta[b"fastfem.config"].replace(b'"k": 2.0', b'"k": 3.0')
    pq.write_table(table.replace_schema_metadata(meta), part)
    with pytest.raises(ValueError, match="does not match its hash"):
        audit(store.parent / "x.npy", out=out, resume=True)


# ------------------------------------------------------------------------- sources and ids


def test_resume_with_another_source_is_refused_unless_allowed(store, tmp_path, capsys):
    out = _copy(store, tmp_path)
    folder = tmp_path / "pngs"
    folder.mkdir()
    from PIL import Image

    for i, img in enumerate(X[:4]):  # the same pixels, under other ids
        Image.fromarray(np.uint8(np.rint(img * 255))).save(folder / f"img{i}.png")
    before = _state(out)
    assert main(_audit_args(folder, out, "--resume")) == 2
    err = _one_line_error(capsys)
    assert "24 committed ids are not in" in err and "--allow-new-source" in err
    assert _state(out) == before
    assert main(_audit_args(folder, out, "--resume", "--allow-new-source")) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert len(manifest["sources"]) == 2 and manifest["sources"][1].startswith("image folder")
    assert len(ResultStore(out).read_rows()["id"]) == 28


def test_a_grown_source_resumes(store, tmp_path):
    out = _copy(store, tmp_path)
    np.save(tmp_path / "x30.npy", sample.generate("test", n=30).images)
    summary = audit(tmp_path / "x30.npy", out=out, batch_size=16, part_size=10, resume=True)
    assert summary.skipped_already_committed == 24 and summary.processed == 6


def test_a_copied_part_is_reported_as_duplicate_ids(store, tmp_path, capsys):
    out = _copy(store, tmp_path)
    part = ResultStore(out).part_files()[0]
    shutil.copy(part, out / "parts" / "part-p000-000007.parquet")
    shutil.copy(ResultStore(out).maps_path(part), out / "maps" / "maps-p000-000007.npy")
    assert main(_audit_args(store.parent / "x.npy", out, "--resume")) == 2
    err = _one_line_error(capsys)
    assert "10 ids are committed more than once" in err and "part-p000-000007.parquet" in err
    assert main(["report", str(out)]) == 2
    assert "committed more than once" in _one_line_error(capsys)


# --------------------------------------------------------------------------- odd arguments


@pytest.mark.parametrize("argv", [["audit", "--out", ""], ["audit", "--out", "  "]])
def test_an_empty_out_is_refused_and_nothing_written(tmp_path, monkeypatch, capsys, argv):
    monkeypatch.chdir(tmp_path)
    assert main([*argv, "--quiet"]) == 2
    assert "--out is empty" in _one_line_error(capsys)
    assert list(tmp_path.iterdir()) == []


def test_report_refuses_an_empty_out_or_store(store, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["report", str(store), "--out", ""]) == 2
    assert "--out is empty" in _one_line_error(capsys)
    assert main(["report", ""]) == 2
    assert "store folder is empty" in _one_line_error(capsys)
    assert main(["report", str(store), "--out", str(tmp_path)]) == 2  # a folder, not a file
    assert "is a folder" in _one_line_error(capsys)
    assert list(tmp_path.iterdir()) == []


def test_an_out_that_is_a_file_is_refused(tmp_path, capsys):
    (tmp_path / "f").write_bytes(b"x")
    assert main(["audit", "--out", str(tmp_path / "f"), "--quiet"]) == 2
    assert "is a file, not a folder" in _one_line_error(capsys)
    assert (tmp_path / "f").read_bytes() == b"x"


@pytest.mark.parametrize(
    ("body", "named"),
    [
        ({"config": "x"}, "'config' is str, not an object"),
        ({"parts": 3}, "'parts' is int, not a list"),
        ([1, 2], "not a JSON object"),
    ],
)
def test_a_malformed_manifest_is_one_line(store, tmp_path, capsys, body, named):
    out = _copy(store, tmp_path)
    (out / "manifest.json").write_text(json.dumps(body))
    assert main(_audit_args(store.parent / "x.npy", out, "--resume")) == 2
    assert named in _one_line_error(capsys)
    assert main(["report", str(out)]) == 2
    assert named in _one_line_error(capsys)


def test_big_endian_arrays_read_like_little_endian(tmp_path):
    from fastfem.data.sources import open_source

    x16 = np.random.default_rng(0).integers(0, 65536, (3, 64, 64, 3)).astype("<u2")
    pixels = {}
    for order in "<>":
        for kind, x in (("u2", x16), ("f4", x16 / 65535.0)):
            path = tmp_path / f"{kind}{'le' if order == '<' else 'be'}.npy"
            np.save(path, x.astype(order + kind))
            src = open_source(path, (64, 64, 3))
            pixels[order, kind] = np.stack([r.image for r in src.read(lambda i, rid: True)])
    for kind in ("u2", "f4"):
        assert pixels[">", kind].dtype == np.float32
        np.testing.assert_array_equal(pixels[">", kind], pixels["<", kind])
    np.testing.assert_allclose(pixels[">", "u2"], pixels[">", "f4"], atol=1e-7)


# ------------------------------------------------------------------- a report while writing


def test_a_report_while_parts_are_committed_reads_a_consistent_snapshot(tmp_path):
    """A writer commits parts of 7 rows (maps of another row count than the parts already
    there) while reports are written: every report is whole, none fails."""
    from synthetic_store import write_store

    root = tmp_path / "s"
    write_store(root, 300, size=8, part=100, seed=3)
    base = ResultStore(root)
    schema = pq.read_schema(base.part_files()[0]).remove_metadata()
    first = pq.read_table(base.part_files()[0]).slice(0, 7)
    stop = threading.Event()
    committed = []

    def writer():
        w = PartWriter(ResultStore(root), schema, (8, 8), part_size=7)
        k = 0
        while not stop.is_set() and k < 200:
            rows = first.to_pydict()
            recs = [Record(f"extra-{k}-{i}", label=rows["label"][i]) for i in range(7)]
            out = {
                c: np.asarray([v if v is not None else np.nan for v in rows[c]])
                for c in w.result_columns
            }
            out["map"] = np.random.default_rng(k).random((7, 8, 8)).astype(np.float32)
            w.add_batch(recs, out, [None] * 7)
            committed.append(k)
            k += 1

    (root / "audit.lock").write_text(json.dumps({"pid": 1, "host": "h", "since": "now"}))
    thread = threading.Thread(target=writer)
    thread.start()
    try:
        pages = [write_report(root, tmp_path / f"r{i}.html").read_text() for i in range(3)]
    finally:
        stop.set()
        thread.join()
    assert len(committed) > 3  # parts were committed while the reports read
    for page in pages:
        assert page.rstrip().endswith("</html>") and "This store is being written" in page


# ------------------------------------------------------------- every string escaped at one place

#: Breaks out of element text and of a quoted attribute, and runs script both ways if live.
PAYLOAD = (
    "\"'><script>document.title='pwned'</script><img src=x onerror=\"document.title='pwned'\">"
)


def hostile_store(root: Path) -> None:
    """A store whose every string field is hostile: ids, labels (the classes: no prediction
    column), errors, the manifest's model, layer, method, source and configuration, and the
    stored flags' reasons; the detectors' tables carry the hostile ids and classes."""
    import pyarrow as pa
    from synthetic_store import write_store

    from fastfem.audit.detectors import detect, write_detection
    from fastfem.audit.detectors.tables import FLAGS_FILE, read_table, write_flags

    write_store(root, 600, size=16, part=300, rate=0.1, seed=5)
    store = ResultStore(root)
    for k, part in enumerate(store.part_files()):
        t = pq.read_table(part).drop_columns(["prediction", "confidence"]).to_pydict()
        t["id"] = [f"{PAYLOAD}{k}-{i}" for i in range(len(t["id"]))]
        t["label"] = [f"{PAYLOAD}{v}" for v in t["label"]]
        t["error"] = [None if e is None else f"{PAYLOAD}{e}" for e in t["error"]]
        schema = store_schema(list(t))
        write_table_atomic(part, pa.Table.from_pydict(t, schema=schema))
    hostile = {
        "model": PAYLOAD,
        "layer": PAYLOAD,
        "method": PAYLOAD,
        "source": PAYLOAD,
        "config": {"k": PAYLOAD},
        "versions": {"fastfem": PAYLOAD},
        "last_run": {"flag_rule": PAYLOAD, "images_per_second": PAYLOAD},
    }
    (root / "manifest.json").write_text(json.dumps(hostile))
    write_detection(root, detect(store))
    flags = read_table(root, FLAGS_FILE)
    flags["reason"] = [f"{PAYLOAD}{r}" for r in flags["reason"]]
    write_flags(root, flags)


def dump_dom(page: Path, tmp_path: Path) -> str:
    """The DOM of ``page`` after it loaded (and ran whatever it runs) in headless chromium."""
    if shutil.which("chromium") is None:
        if os.environ.get("FASTFEM_REQUIRE_BROWSER") == "1":
            pytest.fail("FASTFEM_REQUIRE_BROWSER=1 but Debian chromium is not installed")
        pytest.skip("Debian chromium not installed (tests/run.sh installs it when run as root)")
    run = subprocess.run(
        [
            "chromium",
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={tmp_path / 'profile'}",
            "--virtual-time-budget=3000",
            "--dump-dom",
            page.as_uri(),
        ],
        check=True,
        capture_output=True,
        text=True,
        timeout=120,
    )
    return run.stdout


def elements(dom: str) -> list[tuple[str, dict[str, str]]]:
    """Every element of a serialised DOM: (tag, attributes)."""
    from html.parser import HTMLParser

    found: list[tuple[str, dict[str, str]]] = []

    class Collect(HTMLParser):
        def handle_starttag(self, tag, attrs):
            found.append((tag, {k: v or "" for k, v in attrs}))

    Collect().feed(dom)
    return found


def test_a_hostile_store_renders_as_text_in_a_real_browser(tmp_path):
    import html

    root = tmp_path / "s"
    hostile_store(root)
    page = write_report(root, tmp_path / "report.html")
    dom = dump_dom(page, tmp_path)
    assert "<title>fastfem audit report</title>" in dom  # no script changed it
    tags = elements(dom)
    assert not [t for t, _ in tags if t == "script"]
    assert not [a for _, attrs in tags for a in attrs if a.startswith("on")]  # no handler
    srcs = [attrs["src"] for t, attrs in tags if t == "img"]
    assert len(srcs) > 20 and all(s.startswith("data:image/png;base64,") for s in srcs)
    assert any(PAYLOAD in attrs.get("alt", "") for t, attrs in tags if t == "img")  # as text
    text = html.escape(PAYLOAD, quote=False)  # how the DOM serialises the text
    for literal in (f"{text}0-", f"{text}class", "cluster", "hot spot"):
        assert literal in dom, literal
    assert dom.count(text) >= 24 + 10  # ids, labels, reasons, classes, the manifest's fields
    # the check can fail: the same page with one payload left live runs its script
    live = tmp_path / "live.html"
    live.write_text(page.read_text().replace("<h1>", PAYLOAD + "<h1>", 1))
    assert "<title>pwned</title>" in dump_dom(live, tmp_path)


def test_the_report_builds_html_only_through_render():
    """No f-string (or concatenation) in report.py holds a tag: every piece of HTML is a
    `render` template, whose values are escaped; the page is written only as `Markup`."""
    import ast

    import fastfem.audit.report.page as report
    from fastfem.audit.report.markup import Markup, page_bytes, render

    tree = ast.parse(Path(report.__file__).read_text())
    tagged = [
        node.lineno
        for node in ast.walk(tree)
        if isinstance(node, ast.JoinedStr)
        and any(isinstance(v, ast.Constant) and "<" in str(v.value) for v in node.values)
    ]
    assert tagged == []
    with pytest.raises(TypeError, match="built with fastfem.audit.report.markup.render"):
        page_bytes("<p>plain text</p>")
    row = render("<td>{v}</td><td>{x:.1f}</td>", v=PAYLOAD, x=2.25)
    assert isinstance(row, Markup) and "<script>" not in row and row.endswith("<td>2.2</td>")
    assert render("<p>{inner}</p>", inner=row).count("&lt;script&gt;") == 1  # not twice


# ------------------------------------------------------------------------- size before bytes


def write_npz_bomb(path: Path, shape: tuple[int, ...]) -> None:
    """An ``.npz`` whose ``images`` member is zeros of ``shape`` (uint8), deflated while it is
    written (never held in memory): ~1 MB on disk per GB of array."""
    import zipfile

    with (
        zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as zf,
        zf.open("images.npy", "w", force_zip64=True) as f,
    ):
        header = {"descr": "|u1", "fortran_order": False, "shape": shape}
        np.lib.format.write_array_header_2_0(f, header)
        chunk = bytes(16 << 20)
        left = int(np.prod(shape))
        while left:
            f.write(chunk[: min(left, len(chunk))])
            left -= min(left, len(chunk))


@pytest.mark.slow
def test_a_deflated_array_of_the_wrong_channels_is_refused_from_its_header(tmp_path):
    """1.2 GB of 4-channel images in a ~1.2 MB .npz: refused before anything is inflated; the
    refusing process's peak RSS (measured by getrusage) stays under 0.6 GB."""
    path = tmp_path / "bomb.npz"
    write_npz_bomb(path, (73_243, 64, 64, 4))  # 1.2e9 bytes
    assert path.stat().st_size < 2_000_000
    argv = ["audit", str(path), "--quiet", "--out", str(tmp_path / "s")]
    audit = f"import sys\nfrom fastfem.cli import main\nsys.exit(main({argv!r}))\n"
    # getrusage's ru_maxrss survives fork and exec: a child of this (large) pytest process would
    # report this process's size. A small launcher runs the audit and reads its children's peak.
    launcher = (
        "import resource, subprocess, sys\n"
        "run = subprocess.run(sys.argv[1:], capture_output=True, text=True)\n"
        "sys.stderr.write(run.stderr)\n"
        "print(run.returncode, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n"
    )
    run = subprocess.run(
        [sys.executable, "-c", launcher, sys.executable, "-c", audit],
        capture_output=True,
        text=True,
        timeout=300,
    )
    rc, peak_kib = (int(v) for v in run.stdout.split())
    assert rc == 2 and "4-channel image where the model expects 3 channels" in run.stderr
    assert run.stderr.strip().count("\n") == 0, run.stderr
    print(f"peak RSS of the .npz refusal: {peak_kib / 2**20:.3f} GiB")
    assert peak_kib * 1024 < 0.6e9, peak_kib


def test_npz_images_are_read_one_at_a_time_and_equal_numpy(tmp_path):
    from fastfem.data.npz import open_npz
    from fastfem.data.sources import open_source

    x = np.random.default_rng(2).integers(0, 256, (5, 64, 64, 3), dtype=np.uint8)
    np.savez_compressed(tmp_path / "a.npz", images=x, ids=np.array(["a", "b", "c", "d", "e"]))
    images, ids, _ = open_npz(tmp_path / "a.npz")
    assert images.shape == x.shape and ids.tolist() == ["a", "b", "c", "d", "e"]
    np.testing.assert_array_equal(images[3], x[3])
    np.testing.assert_array_equal(images[1], x[1])  # an earlier image: the stream restarts
    src = open_source(tmp_path / "a.npz", (64, 64, 3))
    got = list(src.read(lambda i, rid: rid in ("b", "e")))
    assert [r.id for r in got] == ["b", "e"]
    np.testing.assert_array_equal(np.stack([r.image for r in got]), x[[1, 4]])
    # an ids member of the wrong length is refused from its header
    np.savez(tmp_path / "b.npz", images=x, ids=np.arange(7))
    with pytest.raises(ValueError, match=r"b.npz\[ids\]: shape \(7,\), expected \(5,\)"):
        open_source(tmp_path / "b.npz", (64, 64, 3))
