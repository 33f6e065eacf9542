"""`fastfem report`: a self-contained HTML page, checked as text and in a real headless browser."""

import os
import re
import shutil
import subprocess

import numpy as np
import pyarrow.parquet as pq
import pytest

from fastfem import sample
from fastfem.audit import audit
from fastfem.audit.report.page import write_report
from fastfem.cli import main


@pytest.fixture(scope="module")
def audited(tmp_path_factory):
    out = tmp_path_factory.mktemp("report") / "store"
    # the bundled sample: 512 images with planted watermarks; the map detectors alone (its model
    # barely relies on the watermark: with the reliance test on, no row is flagged)
    audit(out=out, reliance_sample=0)
    return out


def test_report_is_self_contained_and_shows_the_flagged(audited):
    assert main(["report", str(audited), "--top", "12"]) == 0
    page = (audited / "report.html").read_text()
    assert "<title>fastfem audit report</title>" in page
    # every picture is embedded; nothing is fetched from a server or another file
    srcs = re.findall(r'src="([^"]+)"', page)
    assert all(s.startswith("data:image/png;base64,") for s in srcs)
    assert not re.search(r'(href|src)="(https?:|/|file:)', page)
    assert len(re.findall(r'<figure class="flagged">', page)) == 12
    assert "hot spot: maps clustered by k-means" in page and "test-00104" in page
    # one section for the planted shortcut's cluster, plus the per-class mean maps
    assert len(re.findall(r"Cluster \d+: shortcut candidate", page)) == 1
    assert page.count("prediction ") >= 4 and len(page) < 2_000_000


def test_report_renders_in_headless_chromium(audited, tmp_path):
    if shutil.which("chromium") is None:
        if os.environ.get("FASTFEM_REQUIRE_BROWSER") == "1":
            pytest.fail("FASTFEM_REQUIRE_BROWSER=1 but Debian chromium is not installed")
        pytest.skip("Debian chromium not installed (tests/run.sh installs it when run as root)")
    html = write_report(audited, tmp_path / "r.html")
    shot = tmp_path / "shot.png"
    subprocess.run(
        [
            "chromium",
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={tmp_path / 'profile'}",
            "--window-size=1200,1600",
            f"--screenshot={shot}",
            html.as_uri(),
        ],
        check=True,
        capture_output=True,
        timeout=120,
    )
    from PIL import Image

    pixels = np.asarray(Image.open(shot).convert("RGB"), dtype=np.float32)
    assert pixels.shape[:2] == (1600, 1200)
    # the gallery's overlays are colourful: many pixels far from grey/white
    saturation = pixels.max(axis=2) - pixels.min(axis=2)
    assert (saturation > 80).mean() > 0.02


def test_report_cluster_section_puts_the_planted_shortcut_at_its_place(audited):
    """Done-when of the shortcut detectors: one candidate cluster, its mean map peaks on the
    planted watermark (bottom-right, pixels 56-61 of 64), and the report shows that cluster."""
    from fastfem.sample import WATERMARK_BOX

    clusters = pq.read_table(audited / "clusters.parquet").to_pydict()
    candidates = [j for j, c in enumerate(clusters["candidate"]) if c]
    assert len(candidates) == 1
    j = candidates[0]
    h, w = clusters["map_height"][j], clusters["map_width"][j]
    mean = np.asarray(clusters["mean_map"][j]).reshape(h, w)
    py, px = np.unravel_index(int(np.argmax(mean)), (h, w))
    assert (clusters["peak_y"][j], clusters["peak_x"][j]) == ((py + 0.5) / h, (px + 0.5) / w)
    x0, y0, x1, y1 = WATERMARK_BOX  # pixels of a 64-pixel image -> cells of the 16-cell map
    assert y0 * h // 64 - 1 <= py <= (y1 - 1) * h // 64 + 1
    assert x0 * w // 64 - 1 <= px <= (x1 - 1) * w // 64 + 1
    page = write_report(audited, audited / "again.html").read_text()
    assert f"Cluster {clusters['cluster'][j]}: shortcut candidate" in page
    # the members shown first are the planted images
    s = sample.generate("test")
    planted = {rid for rid, m in zip(s.ids, s.watermark, strict=True) if m}
    assert set(clusters["members"][j][:8]) <= planted


@pytest.mark.slow
def test_report_of_a_100k_row_store_reads_maps_by_shard_and_stays_small(tmp_path, monkeypatch):
    """100,000 rows of 20x20 maps (160 MB of maps): the detectors and the report stream the
    shards (the whole-store `read_maps` is never called; the traced memory of each stays
    under half the maps' size, most of it the row table) and the page stays under 2 MB."""
    import tracemalloc

    from synthetic_store import write_store

    from fastfem.audit import ResultStore
    from fastfem.audit.detectors import detect, write_detection

    root = tmp_path / "big"
    marked = write_store(root, 100_000, size=20, part=2048, rate=0.05, cell=(0, 17), seed=11)
    maps_bytes = 100_000 * 20 * 20 * 4

    def refuse(self):
        raise AssertionError("read_maps loads every map at once")

    monkeypatch.setattr(ResultStore, "read_maps", refuse)
    tracemalloc.start()
    try:
        det = detect(ResultStore(root))
        write_detection(root, det)
        peak_detect = tracemalloc.get_traced_memory()[1]
        flagged = det.flagged
        del det
        tracemalloc.reset_peak()
        page = write_report(root, top=24)
        peak_report = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert max(peak_detect, peak_report) < maps_bytes / 2, (peak_detect, peak_report)
    tp = np.sum(flagged & marked)
    assert tp / flagged.sum() >= 0.9 and tp / marked.sum() >= 0.9
    assert page.stat().st_size < 2_000_000
    text = page.read_text()
    assert len(re.findall(r"Cluster \d+: shortcut candidate", text)) == 1
    assert len(re.findall(r'<figure class="flagged">', text)) == 24
