"""The planted-shortcut benchmark: the default audit (map detectors and the reliance test) on
CNNs trained until they rely on a planted shortcut (cached weights,
`tests/support/shortcut_models/`, rebuilt by ``python -m benchmarks.shortcut_models train``),
scored against the model's own reliance (each marked image against its clean twin) — one set of
thresholds for every configuration and base, nothing told where the mark is. The full table:
``python -m benchmarks.shortcuts``."""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks.shortcuts import evaluate, scores

pytestmark = pytest.mark.reliance_default


def test_scores_count_carriers_for_precision_and_relied_on_rows_for_recall():
    flagged = np.array([1, 1, 1, 0, 0, 0], bool)
    marked = np.array([1, 1, 0, 1, 0, 0], bool)
    relied = np.array([1, 0, 0, 1, 0, 0], bool)
    s = scores(flagged, marked, relied)
    assert s["precision"] == pytest.approx(2 / 3)  # two of three flagged rows carry the mark
    assert s["recall"] == pytest.approx(1 / 2)  # one of two relied-on rows flagged
    assert s["recall_marked"] == pytest.approx(2 / 3)
    assert s["f1"] == pytest.approx(2 * (2 / 3) * 0.5 / (2 / 3 + 0.5))
    empty = scores(np.zeros(6, bool), marked, relied)
    assert empty["f1"] == 0.0 and empty["precision"] != empty["precision"]  # NaN: none flagged


#: A sample of the benchmark's rows that the audit finds (the full table, with the kinds it
#: does not find, is the README's): a band of translucent text over the objects and a patch in
#: a corner.
EVALUATED = [("shapes", "watermark@middle"), ("shapes", "checker@top-left")]


@pytest.mark.slow
@pytest.mark.parametrize(("base", "name"), EVALUATED)
def test_the_audit_flags_the_rows_that_rely_on_the_shortcut(base, name, tmp_path):
    row = evaluate(base, name, "test", tmp_path)
    f = row["fastfem"]
    assert f["relied_on"] >= 20, f  # the model does rely on its mark
    assert f["recall"] >= 0.8 and f["precision"] >= 0.7, row
    assert "relies on" in row["reliance"], row["reliance"]


@pytest.mark.slow
def test_the_control_flags_almost_nothing(tmp_path):
    row = evaluate("shapes", "none", "test", tmp_path)
    assert row["fastfem"]["flag_rate"] <= 0.01, row


@pytest.mark.slow
def test_mlfem_audit_gets_the_same_detectors(tmp_path):
    """MLFEM maps are stored at the input size (64x64); the detectors pool them to their grids
    and find the bundled watermark too (the corner rule: recall 0.67 there). The reliance test
    is off: the bundled model barely relies on its watermark, so with it the audit flags none."""
    import pyarrow.parquet as pq

    from fastfem import sample
    from fastfem.audit import audit

    s = sample.generate("test")
    summary = audit(out=tmp_path / "m", method="mlfem", reliance_sample=0)  # the maps alone
    flagged = set(pq.read_table(tmp_path / "m" / "flags.parquet").column("id").to_pylist())
    planted = {rid for rid, w in zip(s.ids, s.watermark, strict=True) if w}
    tp = len(flagged & planted)
    assert tp / len(flagged) >= 0.9 and tp / len(planted) >= 0.9
    assert summary.flagged_total == len(flagged)


@pytest.mark.slow
def test_fam_audit_gets_the_detectors_and_the_reliance_test(tmp_path):
    """A FAM audit (each image against its class prototype) of a model with a classifier head
    runs the same detectors on its maps, and the reliance test on the model's output. FAM has
    no map of an image alone, so the probe that follows each row's map peak is asked by the
    labels only: not without them, and with them it runs (its maps' contrasts unmeasured)."""
    import numpy as np
    import pyarrow.parquet as pq

    from benchmarks.shortcut_data import generate_shortcut
    from benchmarks.shortcut_models import model_path
    from fastfem.audit import audit
    from fastfem.audit.reliance.table import RELIANCE_FILE

    s = generate_shortcut("watermark@middle", "test", n=256)
    model = str(model_path("watermark@middle"))
    summary = audit(s.images, model, out=tmp_path / "fam", method="fam", reliance_sample=128)
    flags = pq.read_table(tmp_path / "fam" / "flags.parquet").to_pydict()
    assert summary.flagged_total == len(flags["id"])
    assert summary.reliance and not summary.reliance.startswith("not run"), summary.reliance
    source = tmp_path / "labelled.npz"
    np.savez(source, images=s.images, labels=s.objects.astype(str))
    labelled = audit(str(source), model, out=tmp_path / "l", method="fam", reliance_sample=128)
    probes = [int(t.split(" probes")[0].split()[-1]) for t in (summary.reliance, labelled.reliance)]
    table = pq.read_table(tmp_path / "l" / RELIANCE_FILE).to_pydict()
    assert all(v is None for v in table["lost_extra"]), table  # no contrast measured
    assert probes[1] >= probes[0] + 1, (summary.reliance, labelled.reliance)


def test_the_readme_table_is_rewritten_between_its_markers(tmp_path):
    from benchmarks.shortcuts import TABLE_END, TABLE_START, found_text, write_readme_table

    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n{TABLE_START}\nold | table\n{TABLE_END}\nafter\n")
    write_readme_table("| new |\n", readme)
    assert readme.read_text() == f"intro\n{TABLE_START}\n| new |\n{TABLE_END}\nafter\n"
    found = {"status": "confirmed", "predicted_class": 0, "region": "band y24-40"}
    found |= {"fill": "inpaint", "flagged": 52}
    near = {"status": "not confirmed: place lift 2.42 < 2.5", "predicted_class": 2}
    near |= {"region": "band y40-56", "fill": "inpaint"}
    assert found_text({"candidates": [found]}) == "class 0 relies on band y24-40 (inpaint): 52 rows"
    assert found_text({"reliance": "0 candidates from 85 probes", "candidates": []}) == "–"
    assert found_text({"candidates": [found, near]}) == (
        "class 0 relies on band y24-40 (inpaint): 52 rows; "
        "near miss, class 2 band y40-56 (inpaint): place lift 2.42 < 2.5"
    )
    placing = found | {"region": "centre", "places": "whole image (no red)", "flagged": 30}
    assert found_text({"candidates": [placing]}) == (
        "class 0 relies on centre (inpaint), where whole image (no red) lies: 30 rows"
    )


def test_a_regenerated_table_keeps_the_command_that_measured_its_rows(tmp_path):
    import json

    from benchmarks.shortcuts import main

    row = {"base": "shapes", "config": "none", "candidates": [], "reliance": "0 candidates"}
    control = {"flagged": 0, "rows": 512, "flag_rate": 0.0}
    row |= {"fastfem": control, "maps_only": control, "reliance_only": control}
    command = "benchmarks/shortcuts.py --split holdout; a row rerun with --only"
    stored = tmp_path / "shortcuts-holdout.json"
    stored.write_text(json.dumps({"command": command, "results": [row]}))
    assert main(["--table-only", "--split", "holdout", "--out", str(tmp_path)]) == 0
    assert json.loads(stored.read_text()) == {"command": command, "results": [row]}
    table = (tmp_path / "shortcuts-holdout.md").read_text()
    assert "| shapes | none (control) |" in table and "flags 0 of 512" in table
