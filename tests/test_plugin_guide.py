"""docs/plugins.md's walk-through is examples/og-image, and its testing recipe runs as written."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT, autoloading_env

GUIDE = ROOT / "docs" / "plugins.md"
EXAMPLE = ROOT / "examples" / "og-image"
BLOCK = re.compile(r"^(?P<indent> *)```(?P<language>\w*)\n(?P<body>.*?)^(?P=indent)```[ \t]*$", re.M | re.S)
FILE_NAME = re.compile(r"`([\w./-]+\.(?:py|toml))`")


def walkthrough() -> tuple[dict[str, str], list[str]]:
    """The walk-through's files (each code block under the last file name the text before it
    gives) and its shell blocks, unindented from their list items."""
    section = GUIDE.read_text().split("\n## Walk-through", 1)[1]
    files, commands, position = {}, [], 0
    for block in BLOCK.finditer(section):
        indent = block["indent"]
        body = "".join(line.removeprefix(indent) for line in block["body"].splitlines(keepends=True))
        before, position = section[position:block.start()], block.end()
        if block["language"] == "sh":
            commands.append(body)
            continue
        names = FILE_NAME.findall(before)
        assert names, f"no file name in the text before the {block['language']} block {body[:60]!r}"
        files[names[-1]] = body
    return files, commands


def test_the_walkthrough_files_are_the_example_plugin():
    files, _ = walkthrough()
    assert sorted(files) == ["image_pipeline_og.py", "pyproject.toml", "tests/test_og.py"]
    for name, text in files.items():
        assert (EXAMPLE / name).read_text() == text, f"docs/plugins.md and examples/og-image/{name} differ"


def test_the_testing_recipe_runs_as_written_in_a_new_plugin_project(tmp_path):
    """The walk-through's files copied into a folder of their own, and its command run there by a
    shell whose `python` is this environment's (image-pipeline installed; the plugin is not)."""
    files, commands = walkthrough()
    project = tmp_path / "my-plugin"
    for name, text in files.items():
        (project / name).parent.mkdir(parents=True, exist_ok=True)
        (project / name).write_text(text)
    (command,) = [c for c in commands if "pytest" in c]
    env = autoloading_env(PATH=f"{Path(sys.executable).parent}:{autoloading_env()['PATH']}")
    env.pop("PYTHONPATH", None)
    result = subprocess.run(["bash", "-euc", command], cwd=project, env=env, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert re.search(r"\b3 passed\b", result.stdout), result.stdout[-2000:]


def test_the_transform_example_plans_within_the_contract_for_every_shape_of_photo():
    """The guide's `top` transform, as written, registered as a plugin: photos smaller than the box,
    panoramas (whose strip height must not round past the photo's) and tall ones."""
    import types

    from pipeline.imaging import _checked_plan
    from pipeline.testing import registry_with
    from pipeline.types import Variation

    section = GUIDE.read_text().split("\n## register_transforms", 1)[1]
    plugin = types.ModuleType("guide_top")
    exec(next(BLOCK.finditer(section))["body"], plugin.__dict__)
    registry = registry_with(plugin)
    for box in ((1600, 400), (1200, 630), (970, 250), (728, 90), (400, 1600)):
        variation = Variation("banner", "top", *box)
        for photo in ((4000, 3000), (1200, 900), (6000, 1000), (8000, 531), (100000, 4999), (300, 2000),
                      (1, 10000), (10000, 1), (1, 1)):
            _checked_plan(registry, variation, photo, plugin.top(photo, box))  # raises PluginFailure if broken
