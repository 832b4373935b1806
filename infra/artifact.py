"""The Lambda artifact: a code zip (`pipeline` and `plugins`, nothing else) and a dependency layer.

    python -m infra.artifact [--arch arm64|x86_64] [--python 3.12|3.13]

The layer holds exactly requirements/lambda.txt (never boto3: the runtime has it), installed by
asking pip for manylinux wheels of the target platform. It is cached under .cache/artifacts by the
hash of the pinned requirements, the architecture and the Python version. A missing wheel fails
the build, naming the package. Zips are deterministic (sorted, fixed timestamps), so an unchanged
build is an unchanged deployment.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CACHE = ROOT / ".cache" / "artifacts"
REQUIREMENTS = ROOT / "requirements" / "lambda.txt"
CODE_PACKAGES = ("pipeline", "plugins")
MACHINES = {"arm64": "aarch64", "x86_64": "x86_64"}
PYTHONS = ("3.12", "3.13")
# Lambda's limits: 50 MB for a zip uploaded directly, 250 MB unzipped for function and layers.
ZIPPED_LIMIT = 50 * 1000 * 1000
UNZIPPED_LIMIT = 250 * 1000 * 1000
LAYOUT_VERSION = "1"  # bump when the layer's layout changes, to invalidate caches
FIXED_TIME = (1980, 1, 1, 0, 0, 0)


class BuildError(RuntimeError):
    """The artifact cannot be built; the message says what is missing."""


@dataclass(frozen=True)
class Artifact:
    code_zip: Path
    layer_zip: Path
    architecture: str
    python_version: str

    def report(self) -> str:
        lines = [f"Lambda artifact for {self.architecture}, Python {self.python_version}:"]
        total_unzipped = 0
        for label, path in (("code", self.code_zip), ("layer", self.layer_zip)):
            zipped, unzipped = path.stat().st_size, unzipped_size(path)
            total_unzipped += unzipped
            lines.append(f"  {label:<6}{path}  {zipped / 1e6:6.1f} MB zipped (limit {ZIPPED_LIMIT / 1e6:.0f}), "
                         f"{unzipped / 1e6:6.1f} MB unzipped")
        lines.append(f"  total unzipped {total_unzipped / 1e6:.1f} MB (limit {UNZIPPED_LIMIT / 1e6:.0f})")
        return "\n".join(lines)

    def check_limits(self) -> None:
        for path in (self.code_zip, self.layer_zip):
            if path.stat().st_size > ZIPPED_LIMIT:
                raise BuildError(f"{path} is {path.stat().st_size / 1e6:.1f} MB zipped, over Lambda's 50 MB")
        total = unzipped_size(self.code_zip) + unzipped_size(self.layer_zip)
        if total > UNZIPPED_LIMIT:
            raise BuildError(f"code and layer unzip to {total / 1e6:.1f} MB, over Lambda's 250 MB")


def build(architecture: str = "arm64", python_version: str = "3.12", *, cache: Path = CACHE) -> Artifact:
    if architecture not in MACHINES:
        raise BuildError(f"architecture {architecture!r} is not one of {', '.join(MACHINES)}")
    if python_version not in PYTHONS:
        raise BuildError(f"Python {python_version!r} is not one of {', '.join(PYTHONS)}")
    folder = cache / f"{architecture}-py{python_version}-{requirements_hash(architecture, python_version)}"
    folder.mkdir(parents=True, exist_ok=True)
    layer_zip = folder / "layer.zip"
    if not layer_zip.exists():
        _build_layer(layer_zip, architecture, python_version)
    code_zip = folder / "code.zip"
    _write_zip(code_zip, _code_files())
    artifact = Artifact(code_zip, layer_zip, architecture, python_version)
    artifact.check_limits()
    return artifact


def requirements_hash(architecture: str, python_version: str) -> str:
    digest = hashlib.sha256(REQUIREMENTS.read_bytes())
    digest.update(f"{architecture}/{python_version}/{LAYOUT_VERSION}".encode())
    return digest.hexdigest()[:16]


def _build_layer(layer_zip: Path, architecture: str, python_version: str) -> None:
    staging = layer_zip.with_name("layer-staging")
    shutil.rmtree(staging, ignore_errors=True)
    target = staging / "python"  # Lambda puts a layer's python/ folder on sys.path
    machine = MACHINES[architecture]
    command = [
        sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
        "--target", str(target), "--requirement", str(REQUIREMENTS),
        # Pillow 13's wheels are tagged manylinux_2_28; older packages only manylinux2014.
        "--platform", f"manylinux2014_{machine}", "--platform", f"manylinux_2_28_{machine}",
        "--implementation", "cp", "--python-version", python_version, "--only-binary=:all:",
        "--no-compile",  # bytecode of this interpreter would be dead weight for the target one
    ]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        raise BuildError(
            f"pip found no wheels for Lambda {architecture} / Python {python_version} for every pinned "
            f"requirement in {REQUIREMENTS.relative_to(ROOT)}:\n{result.stderr.strip()[-2000:]}"
        )
    files = [(path, "python/" + str(path.relative_to(target))) for path in sorted(target.rglob("*"))
             if path.is_file() and "__pycache__" not in path.parts]
    partial = layer_zip.with_suffix(".partial")
    _write_zip(partial, files)
    partial.replace(layer_zip)  # only a complete layer is ever cached
    shutil.rmtree(staging, ignore_errors=True)


def _code_files() -> list[tuple[Path, str]]:
    files = []
    for package in CODE_PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            if "__pycache__" not in path.parts:
                files.append((path, str(path.relative_to(ROOT))))
    return files


def _write_zip(target: Path, files: list[tuple[Path, str]]) -> None:
    with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as archive:
        for path, name in sorted(files, key=lambda pair: pair[1]):
            info = zipfile.ZipInfo(name, FIXED_TIME)
            info.external_attr = (0o755 if os.access(path, os.X_OK) else 0o644) << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, path.read_bytes())


def unzipped_size(path: Path) -> int:
    with zipfile.ZipFile(path) as archive:
        return sum(info.file_size for info in archive.infolist())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m infra.artifact", description=__doc__.splitlines()[0])
    parser.add_argument("--arch", choices=sorted(MACHINES), default="arm64")
    parser.add_argument("--python", choices=PYTHONS, default="3.12")
    args = parser.parse_args(argv)
    try:
        artifact = build(args.arch, args.python)
    except BuildError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(artifact.report())
    return 0


if __name__ == "__main__":
    sys.exit(main())
