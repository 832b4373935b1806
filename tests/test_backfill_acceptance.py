"""`image-pipeline backfill`, run as a user runs it, against a moto server on 127.0.0.1.

A store of 300 originals processed on the live path by the default plugins; a test plugin adds
one variation; the local engine (worker processes) does exactly the missing work, and no more.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from backfill_store import (ROOT, backfill_json, client, make_buckets, moto_server, path_of, run_backfill, seed,
                            state, tiny_jpeg)

COUNT = 300
UPLOADS, PROCESSED = "accept-uploads", "accept-processed"
PLUGIN = """
    import time

    from pipeline.hookspecs import hookimpl
    from pipeline.types import PostProcessor, Variation

    @hookimpl
    def register_variations(register):
        register(Variation("panorama", "cover", 120, 40))

    @hookimpl
    def register_postprocessors(register, options):
        delay = options.get("delay", 0)
        def apply(image):
            time.sleep(delay)  # a slow render, so that a run can be stopped half way
            return image
        register(PostProcessor("slow", apply, lambda v: v.name == "panorama", {"delay": delay}))
"""


@pytest.fixture(scope="module")
def server():
    with moto_server() as url:
        yield url


@pytest.fixture(scope="module")
def plugin_path(tmp_path_factory):
    """The test plugin, installed the way pip would, on PYTHONPATH for the subprocesses."""
    site = tmp_path_factory.mktemp("site")
    (site / "panorama_plugin.py").write_text(textwrap.dedent(PLUGIN))
    dist = site / "panorama_plugin-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: panorama-plugin\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[image_pipeline.plugins]\npanorama = panorama_plugin\n")
    return str(site)


def flags(uploads=UPLOADS, processed=PROCESSED, *extra):
    return ["--uploads-bucket", uploads, "--processed-bucket", processed, *extra]


def with_plugin(plugin_path, config: dict | None = None, tmp=None) -> dict:
    # The test asks for its plugin, so installed plugins load here (conftest turns that off).
    return {"PYTHONPATH": plugin_path, "PIPELINE_CONFIG": json.dumps(config or {}), "PIPELINE_DISABLE_PLUGIN_AUTOLOAD": ""}


def changed(before, after) -> dict[str, set[str]]:
    """Changed, added and removed keys, by the folder under uploads/images/."""
    out: dict[str, set[str]] = {}
    for key in after.keys() | before.keys():
        if before.get(key) != after.get(key):
            out.setdefault(key.split("/")[2], set()).add(key)
    return out


def test_a_store_of_300_gets_one_new_variation_then_nothing_then_exactly_what_changed(server, plugin_path):
    s3 = client()
    make_buckets(s3, UPLOADS, PROCESSED)
    seed(s3, UPLOADS, PROCESSED, COUNT)
    start = state(s3, PROCESSED)
    assert len(start) == COUNT * 7

    # the plan: counts, cost, and nothing written
    status, plan = backfill_json(*flags(), "--dry-run", env=with_plugin(plugin_path))
    assert status == 0 and plan["render"] == {"panorama": COUNT} and plan["counts"]["work"] == COUNT
    assert plan["estimates"]["batch"]["total"] > plan["estimates"]["local"]["total"] > 0
    assert plan["estimates"]["local"]["seconds"] > 0 and len(plan["calibrated_on"]) == 3
    assert plan["invalidation_paths"] == [], "no distribution named: the run invalidates nothing, nor is it charged"
    status, named = backfill_json(*flags(), "--dry-run", "--distribution-id", "E2EXAMPLE", env=with_plugin(plugin_path))
    assert status == 0 and named["invalidation_paths"] == ["/uploads/images/manifest/*", "/uploads/images/panorama/*"]
    assert named["estimates"]["local"]["total"] > plan["estimates"]["local"]["total"]
    assert state(s3, PROCESSED) == start, "a dry run writes nothing"

    status, run = backfill_json(*flags(), "--jobs", "2", env=with_plugin(plugin_path))
    assert status == 0, run
    assert run["rendered"] == plan["render"] and run["counts"]["rendered"] == plan["counts"]["work"]
    now = state(s3, PROCESSED)
    after = changed(start, now)
    assert set(after) == {"panorama", "manifest"}, "no other object changed (ETag and last-modified)"
    assert len(after["panorama"]) == COUNT and len(after["manifest"]) == COUNT
    assert len(now) == len(start) + COUNT, "new objects, none removed"
    assert run["requests"]["PutObject"] == 2 * COUNT and run["requests"]["GetObject"] == 2 * COUNT

    second = state(s3, PROCESSED)
    status, again = backfill_json(*flags(), "--jobs", "2", env=with_plugin(plugin_path))
    assert status == 0 and again["counts"]["up-to-date"] == COUNT and "PutObject" not in again["requests"]
    assert again["requests"]["GetObject"] == COUNT, "an unchanged image costs one GET"
    assert state(s3, PROCESSED) == second

    quality = {"plugins": {"sizes": {"quality": {"medium": 50}}}}
    status, plan = backfill_json(*flags(), "--dry-run", env=with_plugin(plugin_path, quality))
    status, run = backfill_json(*flags(), "--jobs", "2", env=with_plugin(plugin_path, quality))
    assert status == 0 and run["rendered"] == plan["render"] == {"medium": COUNT}
    assert set(changed(second, state(s3, PROCESSED))) == {"medium", "manifest"}

    third = state(s3, PROCESSED)
    removed = {**quality, "plugins": {**quality["plugins"], "panorama": {"enabled": False}}}
    status, kept = backfill_json(*flags(), "--jobs", "2", env=with_plugin(plugin_path, removed))
    assert status == 0 and kept["counts"]["up-to-date"] == COUNT and state(s3, PROCESSED) == third, "kept without --prune"
    status, plan = backfill_json(*flags(), "--prune", "--dry-run", env=with_plugin(plugin_path, removed))
    status, pruned = backfill_json(*flags(), "--prune", "--jobs", "2", env=with_plugin(plugin_path, removed))
    assert status == 0 and pruned["pruned"] == plan["prune"] == {"panorama": COUNT}
    assert plan["megapixels"] == 0 and plan["calibrated_on"] == [], "pruning renders nothing, so none is timed"
    assert plan["original_bytes"] == 0, "nor downloads an original"
    assert pruned["requests"]["GetObject"] == COUNT and pruned["requests"]["HeadObject"] == COUNT, \
        "a GET of each manifest and a HEAD of each original"
    gone = changed(third, state(s3, PROCESSED))
    assert set(gone) == {"panorama", "manifest"} and len(gone["panorama"]) == COUNT
    assert not [k for k in state(s3, PROCESSED) if k.startswith("uploads/images/panorama/")]


def test_a_run_stopped_half_way_by_sigint_resumes_to_the_state_of_an_uninterrupted_run(server, plugin_path,
                                                                                      interruptible_children):
    s3 = client()
    count, slow = 80, {"plugins": {"panorama": {"delay": 0.05}}}
    for name in ("stop", "whole"):
        make_buckets(s3, f"{name}-uploads", f"{name}-processed")
        seed(s3, f"{name}-uploads", f"{name}-processed", count)
    env = {**os.environ, **with_plugin(plugin_path, slow)}
    process = subprocess.Popen([sys.executable, "-m", "pipeline", "backfill", *flags("stop-uploads", "stop-processed"),
                                "--jobs", "2", "--json"], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    done = 0
    while time.monotonic() < deadline:
        listing = s3.list_objects_v2(Bucket="stop-processed", Prefix="uploads/images/panorama/")
        done = listing.get("KeyCount", 0)
        if done >= count // 2:
            break
        time.sleep(0.05)
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=120)
    assert process.returncode == 130, err
    interrupted = json.loads(out)
    assert interrupted["interrupted"] and 0 < interrupted["counts"]["rendered"] < count, interrupted["counts"]
    status, resumed = backfill_json(*flags("stop-uploads", "stop-processed"), "--jobs", "2",
                                    env=with_plugin(plugin_path, slow))
    assert status == 0 and resumed["counts"]["rendered"] == count - interrupted["counts"]["rendered"], resumed["counts"]
    status, whole = backfill_json(*flags("whole-uploads", "whole-processed"), "--jobs", "2",
                                  env=with_plugin(plugin_path, slow))
    assert status == 0 and whole["counts"]["rendered"] == count
    assert contents(s3, "stop-processed") == contents(s3, "whole-processed")


def contents(s3, bucket: str) -> dict[str, object]:
    """What a reader sees: each variation's bytes, each manifest without what names the write or version."""
    import hashlib

    found = {}
    for key in state(s3, bucket):
        body = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
        if key.endswith(".json"):
            manifest = json.loads(body)
            manifest.pop("write_id")
            for field in ("version_id", "sequencer"):
                manifest["source"].pop(field)
            found[key] = manifest
        else:
            found[key] = hashlib.md5(body).hexdigest()
    return found


def test_a_corrupt_original_is_reported_and_the_others_finish(server, tmp_path):
    s3 = client()
    make_buckets(s3, "corrupt-uploads", "corrupt-processed")
    for index in range(12):  # a store that predates the pipeline: originals, no manifests
        body = tiny_jpeg(index)[:200] if index == 5 else tiny_jpeg(index)
        s3.put_object(Bucket="corrupt-uploads", Key=f"uploads/images/original/{path_of(index)}", Body=body)
    report = tmp_path / "report.json"
    result = run_backfill(*flags("corrupt-uploads", "corrupt-processed"), "--jobs", "0", "--report", str(report))
    assert result.returncode == 1, result.stderr
    (failure,) = json.loads(report.read_text())["failures"]
    assert failure["key"] == f"uploads/images/original/{path_of(5)}" and "corrupt JPEG" in failure["reason"]
    assert "corrupt JPEG" in result.stdout and "report:" in result.stdout
    manifests = [k for k in state(s3, "corrupt-processed") if "/manifest/" in k]
    assert len(manifests) == 12, "the others finished; the corrupt one has its failed manifest"


def test_usage_errors_exit_2_with_one_line():
    result = run_backfill("--uploads-bucket", "a-b-c")
    assert result.returncode == 2 and result.stderr.startswith("error: name the buckets")
    result = run_backfill(*flags(), "--variation", "nope")
    assert result.returncode == 2 and "--variation nope: not defined" in result.stderr
    result = run_backfill("--stack", "dev", env={"PATH": "/nonexistent"})
    assert result.returncode == 2 and "needs the Pulumi CLI" in result.stderr


def test_stack_outputs_name_the_buckets(server, tmp_path):
    """--stack reads `pulumi stack output --json`: a stand-in pulumi on PATH answers for it."""
    s3 = client()
    make_buckets(s3, "stack-uploads", "stack-processed")
    seed(s3, "stack-uploads", "stack-processed", 3)
    fake = tmp_path / "pulumi"
    outputs = {"uploadsBucket": "stack-uploads", "processedBucket": "stack-processed",
               "pipelineConfig": json.dumps({"disabled_variations": ["xsmall"]})}
    fake.write_text(f"#!/bin/sh\ntest \"$*\" = 'stack output --json --stack dev' || exit 3\necho '{json.dumps(outputs)}'\n")
    fake.chmod(0o755)
    status, result = backfill_json("--stack", "dev", "--prune", "--jobs", "0",
                                   env={"PATH": f"{tmp_path}:{os.environ['PATH']}"})
    assert status == 0 and result["pruned"] == {"xsmall": 3}, "the stack's pipeline configuration is used"
