"""The Lambda artifact: a code zip (`pipeline` and `plugins`, nothing else) and a dependency layer.

    python -m infra.artifact [--arch arm64|x86_64] [--python 3.12|3.13]

The layer holds exactly requirements/lambda.txt (never boto3: the runtime has it), installed by
asking pip for manylinux wheels of the target platform. It is cached under .cache/artifacts by the
hash of the pinned requirements, the architecture and the Python version. A missing wheel fails
the build, naming the package. Zips are deterministic (sorted, fixed timestamps), so an unchanged
build is an unchanged deployment.

Both zips carry bytecode for the target Python when an interpreter of that version is here (this
one or pythonX.Y on PATH): Lambda's /var/task and /opt are read-only, so without it every cold
start compiles each module it imports (about 120 ms, benchmarks/cold_start.py).
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
LAYOUT_VERSION = "2"  # bump when the layer's layout changes, to invalidate caches
FIXED_TIME = (1980, 1, 1, 0, 0, 0)


class BuildError(RuntimeError):
    """The artifact cannot be built; the message says what is missing."""


@dataclass(frozen=True)
class Artifact:
    code_zip: Path
    layer_zip: Path
    architecture: str
    python_version: str
    compiler: str | None  # the interpreter that compiled the bytecode, or None: no bytecode

    def report(self) -> str:
        lines = [f"Lambda artifact for {self.architecture}, Python {self.python_version}:"]
        if self.compiler:
            lines.append(f"  bytecode compiled by {self.compiler}")
        else:
            lines.append(f"  no bytecode: no python{self.python_version} here (this interpreter or on PATH), "
                         f"so each cold start compiles what it imports")
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


def build(architecture: str = "arm64", python_version: str = "3.12", *, cache: Path = CACHE,
          compiler: str | None = None) -> Artifact:
    """Build (or reuse) the artifact; `compiler` is an interpreter of `python_version` for the
    bytecode, found with find_interpreter() when not given."""
    if architecture not in MACHINES:
        raise BuildError(f"architecture {architecture!r} is not one of {', '.join(MACHINES)}")
    if python_version not in PYTHONS:
        raise BuildError(f"Python {python_version!r} is not one of {', '.join(PYTHONS)}")
    compiler = compiler or find_interpreter(python_version)
    folder = cache / (f"{architecture}-py{python_version}-{requirements_hash(architecture, python_version)}"
                      + ("-bytecode" if compiler else ""))
    folder.mkdir(parents=True, exist_ok=True)
    layer_zip = folder / "layer.zip"
    if not layer_zip.exists():
        _build_layer(layer_zip, architecture, python_version, compiler)
    code_zip = folder / "code.zip"
    _build_code(code_zip, compiler)
    artifact = Artifact(code_zip, layer_zip, architecture, python_version, compiler)
    artifact.check_limits()
    return artifact


def find_interpreter(python_version: str, elsewhere: tuple[str, ...] = ()) -> str | None:
    """An interpreter of the Lambda's Python version: this one, pythonX.Y on PATH, or `elsewhere`."""
    for candidate in filter(None, (sys.executable, shutil.which(f"python{python_version}"), *elsewhere)):
        probe = subprocess.run([candidate, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
                               capture_output=True, text=True)
        if probe.returncode == 0 and probe.stdout.strip() == python_version:
            return candidate
    return None


def requirements_hash(architecture: str, python_version: str) -> str:
    digest = hashlib.sha256(REQUIREMENTS.read_bytes())
    digest.update(f"{architecture}/{python_version}/{LAYOUT_VERSION}".encode())
    return digest.hexdigest()[:16]


def _build_layer(layer_zip: Path, architecture: str, python_version: str, compiler: str | None) -> None:
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
        "--no-compile",  # this interpreter's bytecode would be dead weight: the target's is compiled below
    ]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        raise BuildError(
            f"pip found no wheels for Lambda {architecture} / Python {python_version} for every pinned "
            f"requirement in {REQUIREMENTS.relative_to(ROOT)}:\n{result.stderr.strip()[-2000:]}"
        )
    if compiler:
        _compile(compiler, target, "/opt/python")
    files = [(path, "python/" + str(path.relative_to(target))) for path in sorted(target.rglob("*"))
             if path.is_file()]
    partial = layer_zip.with_suffix(".partial")
    _write_zip(partial, files)
    partial.replace(layer_zip)  # only a complete layer is ever cached
    shutil.rmtree(staging, ignore_errors=True)


def _build_code(code_zip: Path, compiler: str | None) -> None:
    staging = code_zip.with_name("code-staging")
    shutil.rmtree(staging, ignore_errors=True)
    for package in CODE_PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            if "__pycache__" not in path.parts:
                copy = staging / path.relative_to(ROOT)
                copy.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(path, copy)
    if compiler:
        _compile(compiler, staging, "/var/task")
    _write_zip(code_zip, [(path, str(path.relative_to(staging))) for path in staging.rglob("*") if path.is_file()])
    shutil.rmtree(staging, ignore_errors=True)


def _compile(compiler: str, folder: Path, deployed_at: str) -> None:
    """Bytecode for the target Python, byte for byte the same on every build: paths are those of
    the deployed files, hash randomisation is off (it orders frozenset constants), and the files
    are never checked against their sources (the deployment cannot change under them)."""
    result = subprocess.run(
        [compiler, "-m", "compileall", "-q", "-d", deployed_at, "--invalidation-mode", "unchecked-hash",
         str(folder)],
        capture_output=True, text=True, env={**os.environ, "PYTHONHASHSEED": "0"},
    )
    if result.returncode != 0:
        raise BuildError(f"{compiler} could not compile {folder}:\n{(result.stdout + result.stderr).strip()[-2000:]}")


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
