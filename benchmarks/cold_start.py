"""Lambda cold start: the artifact's imports and first render, with and without its bytecode.

    .venv/bin/python benchmarks/cold_start.py [--runs N]

Builds the x86_64 artifact for Python 3.12 (which must be on this machine), unzips it twice, once
as built and once without its __pycache__ folders, and times a fresh python3.12 process that
imports the resize handler's modules and renders one 12 MP photo, as a cold Lambda does. Nothing
can be written next to the code (Lambda's /var/task and /opt are read-only): PYTHONDONTWRITEBYTECODE.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from infra import artifact  # noqa: E402
from pipeline import samples  # noqa: E402

SCRIPT = """
import sys, time
started = time.perf_counter()
import pipeline.handlers
from pipeline.imaging import render
from pipeline.registry import load_registry
from pipeline.config import PipelineConfig
imported = time.perf_counter()
render(open(sys.argv[1], "rb").read(), load_registry(PipelineConfig()))
print(imported - started, time.perf_counter() - imported)
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=9)
    args = parser.parse_args()
    python = artifact.find_interpreter("3.12")
    if python is None:
        raise SystemExit("needs python3.12 (Lambda's runtime: on PATH, or one of pyenv's versions) to build and run the artifact")
    built = artifact.build("x86_64", "3.12", compiler=python)
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        # The runtime's own boto3, compiled as Lambda ships it, the same for both trees.
        runtime = root / "runtime"
        subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                        "--no-compile", "--target", str(runtime), "--constraint", str(ROOT / "requirements/dev.txt"),
                        "boto3"], check=True, capture_output=True)
        subprocess.run([python, "-m", "compileall", "-q", str(runtime)], check=True, capture_output=True)
        photo = root / "photo.jpg"
        photo.write_bytes(samples.jpeg_bytes(samples.photo(4032, 3024)))
        trees = {}
        for label in ("with bytecode", "without bytecode"):
            tree = root / label.replace(" ", "-")
            zipfile.ZipFile(built.code_zip).extractall(tree / "task")
            zipfile.ZipFile(built.layer_zip).extractall(tree / "opt")
            if label == "without bytecode":
                for cache in list(tree.rglob("__pycache__")):
                    shutil.rmtree(cache)
            trees[label] = tree
        times: dict[str, list[tuple[float, float]]] = {label: [] for label in trees}
        for _ in range(args.runs):
            for label, tree in trees.items():
                path = [str(tree / "task"), str(tree / "opt" / "python"), str(runtime)]
                env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONDONTWRITEBYTECODE": "1",
                       "PYTHONPATH": os.pathsep.join(path)}
                run = subprocess.run([python, "-s", "-c", SCRIPT, str(photo)], env=env, capture_output=True,
                                     text=True, check=True)
                imported, rendered = (float(value) for value in run.stdout.split())
                times[label].append((imported, rendered))
    print(f"x86_64 artifact, {python}, {args.runs} runs each, alternating; medians")
    print(f"  {'':<18}{'imports':>10}{'first render':>15}{'together':>11}")
    for label, samples_ in times.items():
        imported = statistics.median(s[0] for s in samples_)
        rendered = statistics.median(s[1] for s in samples_)
        together = statistics.median(s[0] + s[1] for s in samples_)
        print(f"  {label:<18}{imported * 1000:>8.0f} ms{rendered * 1000:>12.0f} ms{together * 1000:>8.0f} ms")


if __name__ == "__main__":
    main()
