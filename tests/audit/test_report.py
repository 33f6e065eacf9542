"""`fastfem report`: a self-contained HTML page, checked as text and in a real headless browser."""

import os
import re
import shutil
import subprocess

import numpy as np
import pytest

from fastfem.audit import audit
from fastfem.audit.report import write_report
from fastfem.cli import main


@pytest.fixture(scope="module")
def audited(tmp_path_factory):
    out = tmp_path_factory.mktemp("report") / "store"
    audit(out=out)  # the bundled sample: 512 images with planted watermarks
    return out


def test_report_is_self_contained_and_shows_the_flagged(audited):
    assert main(["report", str(audited), "--top", "12"]) == 0
    page = (audited / "report.html").read_text()
    assert "<title>fastfem audit report</title>" in page
    # every picture is embedded; nothing is fetched from a server or another file
    srcs = re.findall(r'src="([^"]+)"', page)
    assert len(srcs) == 12 + 1 and all(s.startswith("data:image/png;base64,") for s in srcs)
    assert not re.search(r'(href|src)="(https?:|/|file:)', page)
    assert "corner_energy robust z-score" in page and "test-00104" in page


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
