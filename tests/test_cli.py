"""`fastfem explain` on the bundled default, on a .npy and on an image folder; clear errors."""

import json

import numpy as np

from fastfem import sample
from fastfem.cli import main


def test_explain_bundled_default(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["explain", "--limit", "24", "--quiet", "--out", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["layer"] == "last_conv" and summary["images"] == 24
    maps = np.load(out / "maps.npy")
    assert maps.shape == (24, 64, 64, 1) and np.ptp(maps) > 0
    assert json.loads((out / "ids.json").read_text())[:2] == ["test-00000", "test-00001"]
    assert (out / "overlay.png").stat().st_size > 10_000
    assert '"images_per_second"' in capsys.readouterr().out


def test_explain_npy_and_folder_give_the_same_maps(tmp_path):
    s = sample.generate("test", n=6)
    np.save(tmp_path / "x.npy", s.images)
    folder = tmp_path / "pngs"
    sample.write_png_folder(s, folder)
    args = ["--model", str(sample.MODEL_PATH), "--quiet", "--variant", "gradcam"]
    assert main(["explain", str(tmp_path / "x.npy"), *args, "--out", str(tmp_path / "a")]) == 0
    assert main(["explain", str(folder), *args, "--out", str(tmp_path / "b")]) == 0
    a, b = np.load(tmp_path / "a" / "maps.npy"), np.load(tmp_path / "b" / "maps.npy")
    ids_b = json.loads((tmp_path / "b" / "ids.json").read_text())
    order = [ids_b.index(next(i for i in ids_b if i.endswith(f"{sid}.png"))) for sid in s.ids]
    # PNG quantises pixels to 1/255: the maps agree closely, not exactly
    assert np.abs(a - b[order]).max() <= 0.05


def test_explain_errors_name_the_problem(tmp_path, capsys):
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    assert main(["explain", str(tmp_path / "bad"), "--out", str(tmp_path / "o")]) == 2
    assert "cannot decode image" in capsys.readouterr().err
    assert main(["explain", "--layer", "nope", "--out", str(tmp_path / "o")]) == 2
    assert "no layer named 'nope'" in capsys.readouterr().err


def test_fit_refuses_another_size_by_default_in_every_verb(tmp_path, capsys):
    from PIL import Image

    folder = tmp_path / "small"
    folder.mkdir()
    for i in range(2):
        Image.fromarray(np.full((32, 40, 3), 60 * i, np.uint8)).save(folder / f"{i}.png")
    for verb in ("explain", "evaluate"):
        assert main([verb, str(folder), "--quiet", "--out", str(tmp_path / verb)]) == 2
        assert "image is 32x40 (HxW), the model expects 64x64" in capsys.readouterr().err
    out = tmp_path / "squash"
    assert main(["explain", str(folder), "--fit", "squash", "--quiet", "--out", str(out)]) == 0
    assert np.load(out / "maps.npy").shape == (2, 64, 64, 1)
