"""The wheel installs one import root, `tessellate.`, with every package and data file.

The folders stay at the top of the repository (`placement/`, `scheduler/`, ...);
pyproject's package-dir maps them under `tessellate.`. A package added to the
repository but not to pyproject's list would be missing from the wheel: this
test builds the wheel and says which.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

from paths import REPO

MAPPED = {
    "tessellate": "tessellate",
    "placement": "tessellate.placement",
    "scheduler": "tessellate.scheduler",
    "simulator": "tessellate.simulator",
    "agent": "tessellate.agent",
}


def _packages_in_repository() -> set[str]:
    found = set()
    for folder, root in MAPPED.items():
        for init in (REPO / folder).rglob("__init__.py"):
            relative = init.parent.relative_to(REPO / folder)
            found.add(".".join([root, *relative.parts]))
    return found


def _build_wheel(out: Path) -> Path:
    """Build from a copy of the sources: an in-tree build/ left by an earlier build would
    otherwise hand setuptools stale packages."""
    source = out / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, source / name)
    for folder in MAPPED:
        shutil.copytree(REPO / folder, source / folder, ignore=shutil.ignore_patterns("__pycache__"))
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "--wheel-dir",
            str(out),
            str(source),
        ],
        check=True,
        capture_output=True,
        timeout=300,
    )
    (wheel,) = out.glob("tessellate-*.whl")
    return wheel


def test_wheel_holds_every_package_under_one_import_root(tmp_path: Path) -> None:
    names = zipfile.ZipFile(_build_wheel(tmp_path)).namelist()
    top = {name.split("/")[0] for name in names}
    assert {t for t in top if not t.endswith(".dist-info")} == {"tessellate"}, top
    in_wheel = {str(Path(n).parent).replace("/", ".") for n in names if n.endswith("/__init__.py")}
    missing = _packages_in_repository() - in_wheel
    assert not missing, f"add these to [tool.setuptools] packages in pyproject.toml: {sorted(missing)}"
    for data in (
        "tessellate/placement/data/mig_catalogue.json",
        "tessellate/simulator/data/go_rng_cooked.txt",
        "tessellate/agent/proto/deviceplugin.proto",
    ):
        assert data in names, data


def test_installed_wheel_imports_every_module_and_runs(tmp_path: Path) -> None:
    """Every module imports from the installed wheel alone (no stray `import placement`),
    and the command starts."""
    wheel = _build_wheel(tmp_path)
    target = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", str(target), str(wheel)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    modules = sorted(
        ".".join(path.relative_to(target).with_suffix("").parts).removesuffix(".__init__")
        for path in (target / "tessellate").rglob("*.py")
        if path.name != "__main__.py"
    )
    script = (
        "import importlib, sys\n"
        f"for name in {modules!r}:\n"
        "    module = importlib.import_module(name)\n"
        f"    assert module.__file__.startswith({str(target)!r}), (name, module.__file__)\n"
        "assert 'placement' not in sys.modules and 'scheduler' not in sys.modules\n"
    )
    env = {"PYTHONPATH": str(target), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    subprocess.run([sys.executable, "-c", script], check=True, cwd=tmp_path, env=env, timeout=300)
    shown = subprocess.run(
        [sys.executable, "-m", "tessellate", "--help"], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert shown.returncode == 0 and "usage" in shown.stdout.lower(), shown.stderr
