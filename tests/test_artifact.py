"""The Lambda artifact works without the developer's environment, and targets the right CPU."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import boto3
import pytest

from aws import BACKUP, PROCESSED, REGION, UPLOADS
from conftest import ROOT
from infra import artifact
from pipeline import samples

EM_X86_64, EM_AARCH64 = 62, 183


def find_python(version: str) -> str:
    """An interpreter of `version` on this machine, found as the build finds one."""
    found = artifact.find_interpreter(version)
    assert found, f"no python{version} on this machine; Lambda runs {version}, so the test needs it"
    return found


@pytest.fixture(scope="module")
def boto3_only(tmp_path_factory):
    """boto3 and its dependencies alone, as the Lambda runtime provides them (pure Python)."""
    target = artifact.CACHE / "boto3-runtime"
    if not (target / "boto3").exists():
        subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                        "--no-compile", "--target", str(target), "--constraint", str(ROOT / "requirements/dev.txt"),
                        "boto3"], check=True, capture_output=True)
    return target


def elf_machine(data: bytes) -> int:
    assert data[:4] == b"\x7fELF"
    return int.from_bytes(data[18:20], "little")


def test_x86_64_artifact_runs_both_handlers_from_a_bare_python312(tmp_path, boto3_only, moto_server, monkeypatch):
    python = find_python("3.12")
    built = artifact.build("x86_64", "3.12", compiler=python)
    task, opt = tmp_path / "task", tmp_path / "opt"
    zipfile.ZipFile(built.code_zip).extractall(task)
    zipfile.ZipFile(built.layer_zip).extractall(opt)
    assert sorted(p.name for p in task.iterdir()) == ["pipeline", "plugins"]
    assert not (opt / "python" / "boto3").exists(), "the runtime provides boto3"
    # Lambda cannot write bytecode next to the code: it must be in the zips, for 3.12.
    for source in [*task.rglob("*.py"), opt / "python" / "PIL" / "Image.py", opt / "python" / "pluggy" / "_manager.py"]:
        assert (source.parent / "__pycache__" / f"{source.stem}.cpython-312.pyc").exists(), source

    for name, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                        "AWS_DEFAULT_REGION": REGION}.items():
        monkeypatch.setenv(name, value)
    s3 = boto3.client("s3", endpoint_url=moto_server, region_name=REGION)
    for bucket in (UPLOADS, PROCESSED, BACKUP):
        s3.create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": REGION})
    key = "uploads/images/original/from lambda.jpg"
    s3.put_object(Bucket=UPLOADS, Key=key, Body=samples.jpeg_bytes(samples.photo(1200, 900, grain=0)))
    etag = s3.head_object(Bucket=UPLOADS, Key=key)["ETag"].strip('"')
    message = {"Records": [{"eventName": "ObjectCreated:Put", "s3": {"bucket": {"name": UPLOADS},
                                                                     "object": {"key": "uploads/images/original/from+lambda.jpg",
                                                                                "size": 1000, "eTag": etag}}}]}
    event = {"Records": [{"EventSource": "aws:sns", "Sns": {"Message": json.dumps(message)}}]}

    script = ("import json, sys\n"
              "from pipeline.handlers import resize_handler, backup_handler\n"
              "event = json.load(sys.stdin)\n"
              "print('RESULT', json.dumps([resize_handler(event, None), backup_handler(event, None)]))\n")
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path),
           "PYTHONPATH": os.pathsep.join([str(task), str(opt / "python"), str(boto3_only)]),
           "AWS_ENDPOINT_URL": moto_server, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
           "AWS_DEFAULT_REGION": REGION, "UPLOADS_BUCKET": UPLOADS, "PROCESSED_BUCKET": PROCESSED,
           "BACKUP_BUCKET": BACKUP}
    run = subprocess.run([python, "-s", "-c", script], input=json.dumps(event),
                         capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    result = json.loads(next(line for line in run.stdout.splitlines() if line.startswith("RESULT "))[7:])
    assert [r["outcome"] for r in result[0]["results"]] == ["processed"]
    assert [r["outcome"] for r in result[1]["results"]] == ["processed"]
    listed = sorted(o["Key"] for o in s3.list_objects_v2(Bucket=PROCESSED)["Contents"])
    assert listed == sorted([f"uploads/images/{n}/from lambda.jpg" for n in
                             ("large", "medium", "small", "xsmall", "square_medium", "square_small")]
                            + ["uploads/images/manifest/from lambda.jpg.json"])
    assert s3.head_object(Bucket=BACKUP, Key=key)["ETag"].strip('"') == etag


def test_code_zip_is_the_same_bytes_on_every_build():
    """Pulumi deploys a new function version whenever the zip changes: bytecode included, it must not."""
    python = find_python("3.12")
    first = artifact.build("x86_64", "3.12", compiler=python).code_zip.read_bytes()
    assert artifact.build("x86_64", "3.12", compiler=python).code_zip.read_bytes() == first
    assert any(name.endswith(".cpython-312.pyc") for name in zipfile.ZipFile(io.BytesIO(first)).namelist())


def test_without_an_interpreter_of_the_target_version_the_artifact_has_no_bytecode(monkeypatch):
    monkeypatch.setattr(artifact, "find_interpreter", lambda version: None)
    built = artifact.build("x86_64", "3.12")
    assert not any("__pycache__" in name for name in zipfile.ZipFile(built.code_zip).namelist())
    assert "no bytecode" in built.report()


def test_arm64_layer_holds_aarch64_pillow_and_pillow_heif():
    built = artifact.build("arm64", "3.12", compiler=find_python("3.12"))
    with zipfile.ZipFile(built.layer_zip) as layer:
        names = layer.namelist()
        for package in ("PIL", "pillow_heif"):
            objects = [n for n in names if n.startswith((f"python/{package}", f"python/_{package}")) and ".so" in n]
            assert objects, f"no shared objects for {package}"
            for name in objects:
                assert elf_machine(layer.read(name)) == EM_AARCH64, name
        assert any(n.startswith("python/pluggy/") for n in names)
        assert not any(n.startswith(("python/boto3/", "python/botocore/")) for n in names)
    assert "arm64" in built.report() and "limit 250" in built.report()


def test_a_missing_wheel_fails_loudly(tmp_path, monkeypatch):
    requirements = tmp_path / "lambda.txt"
    requirements.write_text("pillow==13.0.0\nno-such-package-for-lambda==0.0.1\n")
    monkeypatch.setattr(artifact, "REQUIREMENTS", requirements)
    monkeypatch.setattr(artifact, "ROOT", tmp_path)
    with pytest.raises(artifact.BuildError, match="no-such-package-for-lambda"):
        artifact.build("arm64", "3.12", cache=tmp_path / "cache")
    assert not list((tmp_path / "cache").rglob("layer.zip")), "a failed build leaves nothing in the cache"


def write_wheel(folder: Path, version: int) -> Path:
    """A pure-Python wheel, always under the same file name, whose module says which build it is."""
    import base64
    import hashlib

    name = "throwaway_layer"
    files = {f"{name}.py": f"VERSION = {version}\n",
             f"{name}-1.0.dist-info/METADATA": "Metadata-Version: 2.1\nName: throwaway-layer\nVersion: 1.0\n",
             f"{name}-1.0.dist-info/WHEEL": "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n"}
    record = "".join(f"{path},sha256={base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b'=').decode()},"
                     f"{len(text.encode())}\n" for path, text in files.items()) + f"{name}-1.0.dist-info/RECORD,,\n"
    wheel = folder / f"{name}-1.0-py3-none-any.whl"
    folder.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(wheel, "w") as archive:
        for path, text in {**files, f"{name}-1.0.dist-info/RECORD": record}.items():
            archive.writestr(path, text)
    return wheel


@pytest.fixture
def project(tmp_path, monkeypatch):
    """A repository root of its own, with requirements/lambda.txt to write."""
    (tmp_path / "requirements").mkdir()
    monkeypatch.setattr(artifact, "ROOT", tmp_path)
    monkeypatch.setattr(artifact, "REQUIREMENTS", tmp_path / "requirements" / "lambda.txt")
    return tmp_path


def test_a_wheel_rebuilt_under_the_same_name_builds_a_new_layer(project, monkeypatch):
    """The layer ships the wheel's new code, not the cached layer of the old one."""
    monkeypatch.setattr(artifact, "find_interpreter", lambda version: None)
    artifact.REQUIREMENTS.write_text("./wheels/throwaway_layer-1.0-py3-none-any.whl\n")

    def shipped() -> str:
        built = artifact.build("x86_64", "3.12", cache=project / "cache")
        return zipfile.ZipFile(built.layer_zip).read("python/throwaway_layer.py").decode()

    write_wheel(project / "wheels", 1)
    assert shipped() == "VERSION = 1\n"
    write_wheel(project / "wheels", 2)
    assert shipped() == "VERSION = 2\n"


def test_the_layer_cache_key_covers_every_local_file_the_requirements_name(project):
    """Nested requirements, `-e` folders, `file:` and `name @ file:` references: a change to any
    file's bytes is a new key, an unchanged tree the same key."""
    write_wheel(project / "wheels", 1)
    (project / "plugin-src").mkdir()
    (project / "plugin-src" / "plugin.py").write_text("A = 1\n")
    outside = write_wheel(project / "elsewhere", 1)
    (project / "requirements" / "more.txt").write_text("file:./wheels/throwaway_layer-1.0-py3-none-any.whl\n")
    artifact.REQUIREMENTS.write_text(
        "# comment\npillow==13.0.0\n-r more.txt\n-e ./plugin-src\n"
        f"throwaway-layer @ file://{outside}  # the same wheel, elsewhere\n")

    def key() -> str:
        return artifact.requirements_hash("arm64", "3.12")

    first = key()
    assert key() == first
    for change in (lambda: write_wheel(project / "wheels", 2),
                   lambda: (project / "plugin-src" / "plugin.py").write_text("A = 2\n"),
                   lambda: (project / "plugin-src" / "new.py").write_text(""),
                   lambda: write_wheel(project / "elsewhere", 2),
                   lambda: (project / "requirements" / "more.txt").write_text(
                       "file:./wheels/throwaway_layer-1.0-py3-none-any.whl\npluggy==1.7.0\n")):
        before = key()
        change()
        assert key() != before
    assert key() != artifact.requirements_hash("x86_64", "3.12")

    artifact.REQUIREMENTS.write_text("./wheels/missing-1.0-py3-none-any.whl\n")
    with pytest.raises(artifact.BuildError, match="missing-1.0-py3-none-any.whl, which does not exist"):
        key()


def test_the_build_takes_pyenvs_newest_release_of_the_version_not_a_pre_release(tmp_path, monkeypatch):
    """pyenv's shim on PATH fails for a version not selected; its folders are looked in instead."""
    real = find_python("3.12")
    for version in ("3.12.0a7", "3.12.4", "3.12.10", "3.1.5"):
        (tmp_path / "versions" / version / "bin").mkdir(parents=True)
        (tmp_path / "versions" / version / "bin" / "python3.12").symlink_to(real)
    monkeypatch.setenv("PYENV_ROOT", str(tmp_path))
    monkeypatch.setenv("PATH", str(tmp_path / "nothing"))
    monkeypatch.setattr(artifact.sys, "executable", "")
    monkeypatch.setattr(artifact.os.path, "exists", lambda path: str(path).startswith(str(tmp_path)))
    assert artifact.find_interpreter("3.12") == str(tmp_path / "versions" / "3.12.10" / "bin" / "python3.12")
