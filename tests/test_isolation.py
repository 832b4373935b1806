"""A third-party plugin installed next to the project changes no result of the project's own tests."""

from __future__ import annotations

import subprocess
import sys

from conftest import ROOT, autoloading_env, run_cli

# What every part of the suite relies on: the default variations (CLI, registry, spec hashes), the
# resize and backup handlers on moto, and the manifest.
SUBSET = [
    "tests/test_cli.py::test_process_writes_exactly_the_resize_objects_at_their_keys",
    "tests/test_plugins.py::test_default_registry_has_the_six_default_variations",
    "tests/test_plugins.py::test_spec_hashes_are_stable_across_runs_and_follow_parameters",
    "tests/test_plugins.py::test_register_variations_from_a_third_party_plugin_are_rendered",
    "tests/test_handlers.py::test_an_upload_yields_variations_manifest_and_backup",
    "tests/test_manifest.py",
]

# Changes everything it can: one more variation, and a PNG beside every variation (new files,
# new spec hashes).
THROWAWAY = '''
import io
from pipeline.hookspecs import hookimpl
from pipeline.types import Encoder, Variation

def encode(image):
    out = io.BytesIO()
    image.save(out, "PNG")
    return out.getvalue()

@hookimpl
def register_variations(register):
    register(Variation("zz_extra", "fit", 100, 100))

@hookimpl
def register_encoders(register):
    register(Encoder("png", "png", "image/png", encode, alongside=True))
'''


def test_an_installed_plugin_changes_no_result_of_the_suite(tmp_path):
    site = tmp_path / "site"
    (site / "throwaway-1.0.dist-info").mkdir(parents=True)
    (site / "throwaway_plugin.py").write_text(THROWAWAY)
    (site / "throwaway-1.0.dist-info" / "METADATA").write_text("Metadata-Version: 2.1\nName: throwaway\nVersion: 1.0\n")
    (site / "throwaway-1.0.dist-info" / "entry_points.txt").write_text(
        "[image_pipeline.plugins]\nthrowaway = throwaway_plugin\n")
    env = autoloading_env(PYTHONPATH=str(site))  # installed, and nothing here turns discovery off

    listed = run_cli("plugins", env=env)
    assert listed.returncode == 0, listed.stderr
    assert "throwaway" in listed.stdout and "zz_extra" in listed.stdout, "the plugin must be installed for real"

    suite = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *SUBSET], cwd=ROOT,
                           env=env, capture_output=True, text=True, timeout=600)
    assert suite.returncode == 0, suite.stdout[-4000:] + suite.stderr[-2000:]
    assert " passed" in suite.stdout and "skipped" not in suite.stdout
