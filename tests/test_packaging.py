"""The package as users install it: the wheel ships every package and the configs (one set of
files: configs/ in the checkout is tavaal_seg/configs in the wheel), and a non-editable install
into a fresh venv runs the demo from another folder with nothing of the checkout in sight.

The fresh venv uses this interpreter's already-installed dependencies (torch and the rest are
not downloaded again): a ``.pth`` file adds this environment's site-packages after the venv's
own, where the wheel is installed with ``pip install --no-deps``."""
from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
TOP_LEVEL_JUNK = {"build", "dist", ".git", ".pytest_cache", "runs", "data", "studies"}


def _not_source(folder: str, names: list[str]) -> set[str]:
    """Build outputs, caches and run folders: never part of what is packaged."""
    top = Path(folder) == REPO
    return {n for n in names if n == "__pycache__" or n.endswith((".egg-info", ".whl"))
            or (top and (n in TOP_LEVEL_JUNK or n.startswith(".venv")))}


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A wheel built from a clean copy of the source tree (no stale build/ to leak into it)."""
    root = tmp_path_factory.mktemp("wheel")
    source = root / "src"
    shutil.copytree(REPO, source, ignore=_not_source)
    isolation = [] if importlib.util.find_spec("setuptools") is None else ["--no-build-isolation"]
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", *isolation, "-w",
                            str(root / "out"), str(source)], capture_output=True, text=True)
    assert built.returncode == 0, built.stderr[-3000:]
    (path,) = (root / "out").glob("tavaal_seg-*.whl")
    return path


def test_wheel_ships_every_package_the_configs_and_the_console_scripts(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        for package_init in [*REPO.glob("tavaal_seg/**/__init__.py"), *REPO.glob("tavaal_cls/**/__init__.py")]:
            assert package_init.relative_to(REPO).as_posix() in names, f"{package_init}: list it in pyproject.toml"
        shipped = sorted(n for n in names if n.startswith("tavaal_seg/configs/"))
        assert shipped == sorted(f"tavaal_seg/configs/{p.name}" for p in (REPO / "configs").glob("*.yaml"))
        for name in shipped:
            assert zf.read(name) == (REPO / "configs" / Path(name).name).read_bytes()
        entry_points = next(zf.read(n).decode() for n in names if n.endswith("entry_points.txt"))
    for script in ("tavaal-seg = tavaal_seg.segmentation.cli:main", "tavaal-cls = tavaal_cls.cli:main",
                   "tavaal-export = tavaal_seg.core.export_cli:main", "tavaal-rank = tavaal_seg.ranking:main",
                   "tavaal-report = tavaal_seg.core.report:main"):
        assert script in entry_points


@pytest.mark.slow
def test_pip_install_then_the_demo_runs_from_another_folder(wheel: Path, tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    venv_site = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                    check=True, capture_output=True, text=True).stdout.strip())
    ours = [p for p in sys.path if p.endswith("site-packages") and Path(p).is_dir()]
    (venv_site / "deps-of-the-test-env.pth").write_text("\n".join(ours) + "\n")
    subprocess.run([str(python), "-m", "pip", "install", "--quiet", "--no-deps", "--no-index", "--ignore-installed",
                    str(wheel)], check=True, capture_output=True, text=True)

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "NO_ALBUMENTATIONS_UPDATE")}
    where = subprocess.run([str(python), "-c", "import tavaal_seg; from tavaal_seg.core.config import find_config; "
                            "print(tavaal_seg.__file__); print(find_config('cityscapes'))"],
                           cwd=elsewhere, env=env, check=True, capture_output=True, text=True).stdout.split()
    assert all(Path(p).is_relative_to(venv) for p in where), where  # the installed copy, not the checkout

    result = subprocess.run([str(venv / "bin" / "tavaal-seg"), "--run-dir", "R", "--device", "cpu"], cwd=elsewhere,
                            env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = (elsewhere / "R" / "metrics.csv").read_text().splitlines()
    assert [row.split(",")[0] for row in metrics[1:]] == ["1", "2", "3"]
    assert (elsewhere / "data" / "demo_streets" / "leftImg8bit" / "train").is_dir()  # the demo wrote its data here
    assert (elsewhere / "R" / "selections" / "cycle_02.csv").is_file()
