"""Every ordering of the S3 calls of two or three events on one key ends where the final state alone would.

For each scenario (uploads, replacements and a removal of one key, each triggering the resize and
the backup function), `interleave.explore` runs every schedule with up to N switches: an
invocation stopped before any call of the storage adapter while other uploads and invocations
run, possibly themselves stopped part way. After each schedule the processed and backup buckets
must equal what processing the final state alone gives: the variations of the final version,
byte for byte, under a manifest naming that version (or a tombstone and no variations), and a
backup of every version that ever existed. INTERLEAVING_BOUND raises the number of switches.
"""

from __future__ import annotations

import functools
import hashlib
import io
import itertools
import os

import pytest
from moto import mock_aws
from PIL import Image

from aws import BACKUP, UPLOADS, Stack
from interleave import Actor, Run, SteppedStore, explore
from pipeline.backup import backup_created
from pipeline.config import PipelineConfig
from pipeline.events import object_changes
from pipeline.outputs import listed_keys, outputs_for_original
from pipeline.registry import load_registry
from pipeline.resize import Scope, apply_change

# Two variations and a WebP beside each keep every schedule short while exercising alternates.
CONFIG = PipelineConfig.from_dict({"disabled_variations": ["medium", "small", "xsmall", "square_medium"],
                                   "plugins": {"webp": {"enabled": True}}})
# What an earlier deployment defined: one variation more, which a backfill with --prune takes away.
WIDER = PipelineConfig.from_dict({"disabled_variations": ["medium", "small", "square_medium"],
                                  "plugins": {"webp": {"enabled": True}}})
RUNS = itertools.count()
# Switches explored by `make test`, by the number of uploads; INTERLEAVING_BOUND=2 (`make interleavings`)
# explores two switches for every scenario (many minutes).
DEFAULT_BOUND = {2: 2, 3: 1}


@functools.cache
def expected_files(key: str, seed: int, etag: str) -> dict[str, bytes]:
    """The variation files that processing version `seed` alone writes, by key."""
    outputs = outputs_for_original(key, version_bytes(seed), etag, load_registry(CONFIG))
    return {obj.key: obj.body for obj in outputs.objects[:-1]}


@functools.cache
def version_bytes(seed: int) -> bytes:
    image = Image.new("RGB", (96 + 16 * seed, 64), (40 * seed % 256, 90, 200 - 30 * seed))
    out = io.BytesIO()
    image.save(out, "PNG")
    return out.getvalue()


@pytest.fixture(scope="module")
def stack():
    environment = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "eu-west-1"}
    saved = {k: os.environ.get(k) for k in environment}
    os.environ.update(environment)
    with mock_aws():
        yield Stack()
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


def scenario_actors(stack, steps: list[tuple[str, int | None]], run_index: int, results: dict) -> list[Actor]:
    """One upload actor per step ("put", seed) or ("delete", None), each followed by its invocations
    ("put-wider": processed under WIDER), or a backfill ("backfill", "prune") after the first one's."""
    registry = load_registry(CONFIG)
    run_index = next(RUNS)  # unique across scenarios: one moto for the whole module
    key = f"uploads/images/original/run {run_index}/ph\u00f6to+1.png"
    processed = f"processed-{run_index}"  # a bucket per run keeps each check to its own objects
    stack.s3.create_bucket(Bucket=processed, CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
    results.update(key=key, versions=[], final=None, processed=processed)
    actors: list[Actor] = []
    previous_upload = None
    for index, (operation, seed) in enumerate(steps):
        if operation in ("backfill", "prune"):
            # "backfill" re-renders one variation of whatever the manifest names, forced; "prune"
            # takes away the variation CONFIG no longer defines, with a HEAD of the original
            scope = Scope(prune=True) if operation == "prune" else Scope(variations=frozenset({"large"}), force=True,
                                                                         prune=False)

            def backfill(run, scope=scope):
                from pipeline.backfill.core import backfill_one

                store = SteppedStore(stack.s3, run.checkpoint)
                backfill_one(store, UPLOADS, key, processed, registry, scope, calls=run.calls)

            actors.append(Actor("backfill", backfill, after="resize1"))
            continue
        events: list = []

        def upload(run, operation=operation, seed=seed, events=events):
            if operation.startswith("put"):
                version = stack.s3.put_object(Bucket=UPLOADS, Key=key, Body=version_bytes(seed))["VersionId"]
                results["versions"].append(version)
                results["final"] = seed
            else:
                stack.s3.delete_object(Bucket=UPLOADS, Key=key)
                results["final"] = None
            (delivery,) = stack.deliveries()
            events.extend(object_changes(delivery, UPLOADS).accepted)

        def resize(run, events=events, registry=load_registry(WIDER) if operation == "put-wider" else registry):
            store = SteppedStore(stack.s3, run.checkpoint)
            for change in events:  # its concurrent calls (the two reads, the puts) as actors of their own
                apply_change(store, change, processed, registry, calls=run.calls)

        def backup(run, events=events):
            store = SteppedStore(stack.s3, run.checkpoint)
            for change in events:
                if change.kind == "created":
                    backup_created(store, change, BACKUP)

        name = f"{operation}{index + 1}"
        actors.append(Actor(name, upload, after=previous_upload))
        actors.append(Actor(f"resize{index + 1}", resize, after=name))
        if operation.startswith("put"):
            actors.append(Actor(f"backup{index + 1}", backup, after=name, switch_to=False))
        previous_upload = name
    return actors


def processed_state(stack, bucket: str) -> dict[str, bytes]:
    listing = stack.s3.list_objects_v2(Bucket=bucket).get("Contents", [])
    return {obj["Key"]: stack.s3.get_object(Bucket=bucket, Key=obj["Key"])["Body"].read() for obj in listing}


def check_final_state(stack, results: dict, run: Run) -> None:
    import json

    story = " -> ".join(f"{actor}:{call}" for actor, call, _ in run.trace)
    errors = [(name, actor.error) for name, actor in run.actors.items() if actor.error]
    assert not errors, f"{errors} in {story}"
    key = results["key"]
    path = key.removeprefix("uploads/images/original/")
    manifest_key = f"uploads/images/manifest/{path}.json"
    state = processed_state(stack, results["processed"])
    manifest = json.loads(state.pop(manifest_key))
    if results["final"] is None:
        assert manifest["status"] == "deleted", story
        assert state == {}, f"variations left after the removal: {sorted(state)} in {story}"
    else:
        head = stack.s3.head_object(Bucket=UPLOADS, Key=key)
        etag = head["ETag"].strip('"')
        assert manifest["status"] == "ready", story
        assert (manifest["source"]["etag"], manifest["source"]["version_id"]) == (etag, head["VersionId"]), story
        expected = expected_files(key, results["final"], etag)
        assert sorted(listed_keys(manifest)) == sorted(expected), story
        wrong = [k for k in expected if hashlib.md5(state.get(k, b"")).digest() != hashlib.md5(expected[k]).digest()]
        assert not wrong, f"{wrong} do not hold the final version's pixels in {story}"
        assert set(state) == set(expected), story
    assert stack.backup_versions(key) == set(results["versions"]), f"backup versions differ in {story}"


def forget_run(stack, results: dict) -> None:
    """Remove what a run wrote, so that moto's listings (and so every later run) stay as fast."""
    for bucket in (UPLOADS, BACKUP):
        versions = stack.s3.list_object_versions(Bucket=bucket, Prefix=results["key"])
        for item in versions.get("Versions", []) + versions.get("DeleteMarkers", []):
            stack.s3.delete_object(Bucket=bucket, Key=item["Key"], VersionId=item["VersionId"])
    stack.deliveries()  # the removals above notify too
    for obj in stack.s3.list_objects_v2(Bucket=results["processed"]).get("Contents", []):
        stack.s3.delete_object(Bucket=results["processed"], Key=obj["Key"])
    stack.s3.delete_bucket(Bucket=results["processed"])


SCENARIOS = {
    "create v1, create v2": [("put", 1), ("put", 2)],
    "create v1, remove": [("put", 1), ("delete", None)],
    "remove, then create v2 again": [("put", 1), ("delete", None), ("put", 2)],
    "create v1, create v2, remove": [("put", 1), ("put", 2), ("delete", None)],
    "create v1, create v2, create v3": [("put", 1), ("put", 2), ("put", 3)],
    # a backfill of v1 while v2 is uploaded and processed live: the live upload is never overwritten
    "create v1, backfill while create v2": [("put", 1), ("backfill", None), ("put", 2)],
    # v1 made under a wider deployment, then a backfill that only prunes (a HEAD, no download) while
    # v2 is uploaded and processed live: v2 whole, and nothing left of the pruned variation
    "create v1 wider, prune while create v2": [("put-wider", 1), ("prune", None), ("put", 2)],
}


@pytest.mark.parametrize("name", SCENARIOS)
def test_every_interleaving_ends_in_the_final_state(stack, name, capsys):
    steps = SCENARIOS[name]
    bound = int(os.environ.get("INTERLEAVING_BOUND") or DEFAULT_BOUND[len(steps)])
    results: dict = {}

    def check(run_index: int, run: Run) -> None:
        try:
            check_final_state(stack, results, run)
        finally:
            forget_run(stack, results)

    count = explore(lambda run_index: scenario_actors(stack, steps, run_index, results), check, bound)
    with capsys.disabled():
        print(f"\n  {name}: {count} interleavings (up to {bound} switches), each ends in the final state")
    assert count > 5 * bound, "the exploration must really branch"
