"""The Lambda artifact: a code zip (`pipeline` and `plugins`, nothing else) and a dependency layer.

    python -m infra.artifact [--arch arm64|x86_64] [--python 3.12|3.13]

The layer holds exactly requirements/lambda.txt (never boto3: the runtime has it), installed by
asking pip for manylinux wheels of the target platform. It is cached under .cache/artifacts by the
hash of requirements/lambda.txt and the bytes of every local wheel or folder it names (a plugin
wheel rebuilt under the same name is a new layer), the architecture and the Python version. A missing wheel fails
the build, naming the package. Zips are deterministic (sorted, fixed timestamps), so an unchanged
build is an unchanged deployment.

Both zips carry bytecode for the target Python when an interpreter of that version is here (this
one, pythonX.Y on PATH, or one of pyenv's versions; see find_interpreter): Lambda's /var/task
and /opt are read-only, so without it every cold start compiles each module it imports (about
120 ms, benchmarks/cold_start.py).
"""

from __future__ import annotations

import argparse
import glob
import hashlib
import os
import re
import shutil
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlparse

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
LOCAL_SUFFIXES = (".whl", ".tar.gz", ".zip", ".tar.bz2", ".tgz")
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
            lines.append(f"  no bytecode: no python{self.python_version} here (this interpreter, PATH, pyenv's versions), "
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


def find_interpreter(python_version: str) -> str | None:
    """An interpreter of the Lambda's Python version: this one, pythonX.Y on PATH, one of pyenv's
    versions (its shim on PATH fails for a version not selected), or the system's."""
    root = os.environ.get("PYENV_ROOT") or os.path.expanduser("~/.pyenv")
    releases = [path for path in glob.glob(os.path.join(root, "versions", f"{python_version}.*"))
                if re.fullmatch(re.escape(python_version) + r"\.\d+", os.path.basename(path))]  # no alphas
    newest_first = sorted(releases, key=lambda path: int(path.rsplit(".", 1)[1]), reverse=True)
    pyenv = [os.path.join(path, "bin", f"python{python_version}") for path in newest_first]
    system = [f"/usr/bin/python{python_version}", f"/usr/local/bin/python{python_version}"]
    for candidate in filter(None, (sys.executable, shutil.which(f"python{python_version}"), *pyenv, *system)):
        if not os.path.exists(candidate):
            continue
        try:
            probe = subprocess.run([candidate, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
                                   capture_output=True, text=True, timeout=30)
        except subprocess.TimeoutExpired:
            continue
        if probe.returncode == 0 and probe.stdout.strip() == python_version:
            return candidate
    return None


def requirements_hash(architecture: str, python_version: str) -> str:
    """The layer's cache key: the bytes of requirements/lambda.txt and of every file the layer is
    built from that it names (a nested -r/-c file; a local wheel, archive or folder, plain, `-e`,
    `file:` or `name @ file:`), with the target. A wheel rebuilt under the same name is a new key."""
    digest = hashlib.sha256()
    for path in layer_inputs(REQUIREMENTS):
        digest.update(str(path.relative_to(ROOT) if path.is_relative_to(ROOT) else path).encode() + b"\0")
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    digest.update(f"{architecture}/{python_version}/{LAYOUT_VERSION}".encode())
    return digest.hexdigest()[:16]


def layer_inputs(requirements: Path) -> list[Path]:
    """The requirements file and every local file it names, folders walked, in a stable order.

    pip reads a nested -r/-c file relative to the file naming it, and a local requirement relative
    to its working folder, which _build_layer sets to the repository's root."""
    files = [requirements]
    for line in _logical_lines(requirements.read_text()):
        option, _, value = line.partition(" ") if line.startswith("-") else ("", "", line)
        if "=" in option and option.startswith("--"):  # --requirement=other.txt
            option, value = option.split("=", 1)
        value = value.strip()
        if option in ("-r", "--requirement", "-c", "--constraint"):
            files += layer_inputs((requirements.parent / value).resolve())
            continue
        if option not in ("", "-e", "--editable"):
            continue  # --index-url, --only-binary, ...: already in the file's own bytes
        local = _local_path(value)
        if local is None:
            continue
        if not local.exists():
            raise BuildError(f"{requirements.name} names {value}, which does not exist ({local})")
        files += sorted(p for p in local.rglob("*") if p.is_file() and not _ignored(p)) if local.is_dir() else [local]
    return files


def _logical_lines(text: str) -> list[str]:
    """pip's view of a requirements file: continuations joined, comments and blank lines dropped."""
    lines = re.sub(r"\\\n", "", text).splitlines()
    return [line for line in (re.sub(r"(^|\s)#.*$", "", raw).strip() for raw in lines) if line]


def _local_path(requirement: str) -> Path | None:
    """The local file or folder a requirement names, or None for one PyPI resolves."""
    requirement = re.split(r"\s+-", requirement, maxsplit=1)[0]  # per-requirement options (--hash=...)
    requirement = requirement.split(";", 1)[0].strip()  # environment markers
    if " @ " in requirement:
        requirement = requirement.split(" @ ", 1)[1].strip()
    requirement = requirement.split("#", 1)[0]  # a URL's #egg=... fragment
    if re.match(r"[a-zA-Z][a-zA-Z0-9+.-]*://", requirement) and not requirement.startswith("file:"):
        return None  # https://, git+https://, ...: remote, pinned by its own text
    if requirement.startswith("file:"):
        location = unquote(urlparse(requirement).path)
        if not requirement.startswith("file://"):  # file:./wheels/x.whl, file:../x
            location = requirement[len("file:"):]
    elif requirement.startswith((".", "/", "~")) or os.sep in requirement or requirement.endswith(LOCAL_SUFFIXES):
        location = requirement
    else:
        return None
    path = Path(location).expanduser()
    return path if path.is_absolute() else ROOT / path


def _ignored(path: Path) -> bool:
    return any(part in ("__pycache__", ".git") for part in path.parts) or path.suffix == ".pyc"


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
    # Local requirements (./wheels/x.whl) are relative to the repository's root, as layer_inputs reads them.
    result = subprocess.run(command, capture_output=True, text=True, cwd=ROOT)
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
