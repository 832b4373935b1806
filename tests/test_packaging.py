"""The project is an installed package: its command and `python -m pipeline` work from any folder."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

from PIL import Image

from conftest import ROOT
from pipeline import samples

BIN = Path(sys.executable).parent


def clean_env() -> dict[str, str]:
    """No PYTHONPATH: only what is installed into the environment can be imported."""
    return {name: value for name, value in os.environ.items() if name != "PYTHONPATH"}


def test_the_installed_command_processes_photos_from_any_folder(tmp_path):
    script = BIN / "image-pipeline"
    assert script.exists(), f"{script} is missing: `make` installs the project into .venv"
    (tmp_path / "photo.jpg").write_bytes(samples.jpeg_bytes(samples.photo(1200, 900, grain=0)))
    result = subprocess.run([str(script), "process", "photo.jpg", "--out", "out"], cwd=tmp_path, env=clean_env(),
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    with Image.open(tmp_path / "out/uploads/images/large/photo.jpg") as large:
        assert large.size == (1200, 900)
    assert (tmp_path / "out/uploads/images/manifest/photo.jpg.json").exists()


def test_python_m_pipeline_runs_from_any_folder(tmp_path):
    result = subprocess.run([sys.executable, "-m", "pipeline", "plugins"], cwd=tmp_path, env=clean_env(),
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "square_small" in result.stdout


def test_the_wheel_holds_every_module_of_pipeline_and_plugins(tmp_path):
    """A regular (not editable) install gets every subpackage, pipeline.local included, and the
    local stack's page."""
    source = tmp_path / "source"
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for folder in ("pipeline", "plugins"):
        shutil.copytree(ROOT / folder, source / folder, ignore=ignore)
    for file in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / file, source / file)
    expected = {str(path.relative_to(source)) for path in source.rglob("*.py")}
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
                    "--disable-pip-version-check", "--wheel-dir", str(tmp_path / "dist"), str(source)],
                   check=True, capture_output=True, timeout=300)
    (wheel,) = (tmp_path / "dist").glob("image_pipeline-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert expected <= names, f"missing from the wheel: {sorted(expected - names)}"
    assert "pipeline/local/s3_notifications.py" in names
    static = {str(path.relative_to(source)) for path in (source / "pipeline/local/static").iterdir()}
    assert static == {"pipeline/local/static/index.html", "pipeline/local/static/app.js",
                      "pipeline/local/static/style.css"}
    assert static <= names, f"the local stack's page is missing from the wheel: {sorted(static - names)}"
    assert not any(name.startswith(("tests/", "infra/", "policy/")) for name in names)
    entry_points = next(zipfile.ZipFile(wheel).read(n).decode() for n in names if n.endswith("entry_points.txt"))
    assert "image-pipeline = pipeline.cli:main" in entry_points
