"""`fastfem.converters` (the top-level ``converters/`` folder, mapped by setuptools' package-dir)
resolves in the editable install and inside a built wheel installed in a fresh venv."""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SUBMODULES = ("export", "feature_extractor", "flax", "keras", "load", "savedmodel", "tf_graph")

# Locates the module without importing fastfem/__init__ (which needs jax, absent in the venv).
FIND = """
import importlib.machinery as m, json, sys
pkg = m.PathFinder.find_spec("fastfem")
conv = m.PathFinder.find_spec("converters", list(pkg.submodule_search_locations))
subs = {n: m.PathFinder.find_spec(n, list(conv.submodule_search_locations)).origin
        for n in sys.argv[1:]}
print(json.dumps({"fastfem": pkg.origin, "converters": conv.origin, "subs": subs}))
"""


def test_editable_install_resolves_converters():
    import fastfem.converters

    assert Path(fastfem.converters.__file__).resolve() == ROOT / "converters" / "__init__.py"
    for name in SUBMODULES:
        spec = importlib.util.find_spec(f"fastfem.converters.{name}")
        assert spec is not None and Path(spec.origin).parent == ROOT / "converters", name


@pytest.mark.slow
def test_wheel_in_fresh_venv_resolves_converters(tmp_path):
    import json

    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in ("fastfem", "converters"):
        shutil.copytree(ROOT / name, src / name, ignore=ignore)
    isolation = [] if importlib.util.find_spec("setuptools") is None else ["--no-build-isolation"]
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "-q",
            *isolation,
            "-w",
            str(tmp_path / "dist"),
            str(src),
        ],
        check=True,
        capture_output=True,
        timeout=300,
    )
    (wheel,) = (tmp_path / "dist").glob("fastfem-*.whl")
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=True, system_site_packages=False).create(env_dir)
    python = env_dir / ("Scripts/python.exe" if sys.platform == "win32" else "bin/python")
    subprocess.run(
        [str(python), "-m", "pip", "install", "--no-deps", "-q", "--no-index", str(wheel)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    proc = subprocess.run(
        [str(python), "-c", FIND, *SUBMODULES],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    found = json.loads(proc.stdout)
    site = env_dir.resolve()
    assert Path(found["converters"]).resolve().is_relative_to(site)
    assert Path(found["converters"]).parent.name == "converters"
    assert Path(found["converters"]).parent.parent.name == "fastfem"
    for name, origin in found["subs"].items():
        assert origin and Path(origin).resolve().is_relative_to(site), name
    # no generic top-level "converters" package installed
    top = subprocess.run(
        [str(python), "-c", "import importlib.util as u; print(u.find_spec('converters'))"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert top.stdout.strip() == "None"
