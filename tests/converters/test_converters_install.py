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
SUBMODULES = tuple(
    sorted(p.stem for p in (ROOT / "converters").glob("*.py") if p.stem != "__init__")
)
#: subpackages of converters/ and their modules (each must be listed in pyproject's packages)
SUBPACKAGES = {
    d.name: tuple(sorted(p.stem for p in d.glob("*.py") if p.stem != "__init__"))
    for d in sorted((ROOT / "converters").iterdir())
    if (d / "__init__.py").is_file()
}

# Locates the module without importing fastfem/__init__ (which needs jax, absent in the venv).
FIND = """
import importlib.machinery as m, json, sys
pkg = m.PathFinder.find_spec("fastfem")
conv = m.PathFinder.find_spec("converters", list(pkg.submodule_search_locations))
where = list(conv.submodule_search_locations)
subs = {}
for name in sys.argv[1:]:  # "module" or "subpackage.module"
    if "." in name:
        package, module = name.split(".")
        inner = m.PathFinder.find_spec(package, where)
        spec = inner and m.PathFinder.find_spec(module, list(inner.submodule_search_locations))
    else:
        spec = m.PathFinder.find_spec(name, where)
    subs[name] = spec.origin if spec else None
print(json.dumps({"fastfem": pkg.origin, "converters": conv.origin, "subs": subs}))
"""


def module_names() -> list[str]:
    """converters/ modules as FIND takes them: ``name`` and ``subpackage.name``."""
    inner = [f"{pkg}.{mod}" for pkg, mods in SUBPACKAGES.items() for mod in ("__init__", *mods)]
    return [*SUBMODULES, *inner]


def test_editable_install_resolves_converters():
    import fastfem.converters

    assert Path(fastfem.converters.__file__).resolve() == ROOT / "converters" / "__init__.py"
    assert "cpu_convs" in SUBPACKAGES and "conv_forms" in SUBPACKAGES["cpu_convs"]
    for name in module_names():
        full = f"fastfem.converters.{name}".removesuffix(".__init__")
        spec = importlib.util.find_spec(full)
        expected = ROOT / "converters" / Path(*name.split(".")[:-1])
        assert spec is not None and Path(spec.origin).parent == expected, name


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
        [str(python), "-c", FIND, *module_names()],
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
