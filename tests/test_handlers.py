"""The Lambda handlers against an in-process AWS: S3 -> SNS -> (SQS capture) -> each handler."""

from __future__ import annotations

import io
import json
from concurrent.futures import Executor, Future

import pytest
from moto import mock_aws
from PIL import Image

from aws import BACKUP, PROCESSED, UPLOADS, Stack
from pipeline import handlers, resize, samples
from pipeline.config import PipelineConfig
from pipeline.events import ObjectChange
from pipeline.registry import load_registry
from pipeline.storage import Conflict, S3Store
from pipeline.caching import VARIATION_CACHE

DEFAULTS = ["large", "medium", "small", "xsmall", "square_medium", "square_small"]


@pytest.fixture
def stack(monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-1")
    monkeypatch.setenv("UPLOADS_BUCKET", UPLOADS)
    monkeypatch.setenv("PROCESSED_BUCKET", PROCESSED)
    monkeypatch.setenv("BACKUP_BUCKET", BACKUP)
    monkeypatch.delenv("PIPELINE_CONFIG", raising=False)
    handlers.s3_client.cache_clear()
    handlers._registry.cache_clear()
    with mock_aws():
        yield Stack()
    handlers.s3_client.cache_clear()
    handlers._registry.cache_clear()


def photo(width=1600, height=1200, seed=1) -> bytes:
    return samples.jpeg_bytes(samples.photo(width, height, seed=seed, grain=0), exif=samples.gps_exif())


def deliver(stack) -> list[dict]:
    """Hand every captured notification to both functions, as the two subscriptions would."""
    results = []
    for event in stack.deliveries():
        results.append((handlers.resize_handler(event, None), handlers.backup_handler(event, None)))
    return results


def head_etag(stack, bucket, key):
    return stack.s3.head_object(Bucket=bucket, Key=key)["ETag"].strip('"')


def assert_files_made_from(stack, path: str, etag: str) -> None:
    """Every default variation of `path` holds pixels of the original version with `etag`."""
    for name in DEFAULTS:
        obj = stack.s3.head_object(Bucket=PROCESSED, Key=f"uploads/images/{name}/{path}")
        assert obj["Metadata"]["source-etag"] == etag, name


def variation_keys(path: str) -> list[str]:
    return [f"uploads/images/{n}/{path}" for n in DEFAULTS]


def test_an_upload_yields_variations_manifest_and_backup(stack):
    key = "uploads/images/original/photo.jpg"
    version = stack.s3.put_object(Bucket=UPLOADS, Key=key, Body=photo(), ContentType="image/jpeg",
                                  Metadata={"uploaded-by": "user-42"})["VersionId"]
    deliver(stack)
    manifest = stack.manifest("photo.jpg")
    assert manifest["status"] == "ready" and set(manifest["variations"]) == set(DEFAULTS)
    assert manifest["source"]["version_id"] == version and manifest["source"]["etag"] == head_etag(stack, UPLOADS, key)
    for name in DEFAULTS:
        head = stack.s3.head_object(Bucket=PROCESSED, Key=f"uploads/images/{name}/photo.jpg")
        assert head["ContentType"] == "image/jpeg"
        assert head["CacheControl"] == VARIATION_CACHE, "unversioned URLs must never be kept for long"
        assert head["Metadata"]["source-etag"] == manifest["source"]["etag"]
        entry = manifest["variations"][name]
        assert entry["key"] == f"uploads/images/{name}/photo.jpg"
        assert entry["url"].startswith(f"/uploads/images/{name}/photo.jpg?v=") and len(entry["url"].split("=")[1]) == 12
    backup = stack.s3.head_object(Bucket=BACKUP, Key=key)
    assert backup["ContentType"] == "image/jpeg" and backup["Metadata"]["uploaded-by"] == "user-42"
    assert backup["Metadata"]["source-version-id"] == version
    assert stack.keys(UPLOADS) == [key], "nothing may be written into the bucket that triggers the functions"


@pytest.mark.parametrize("path", ["summer trip/IMG 0042.jpg", "a+b/c+d.jpg", "2026/caf\u00e9/\u5199\u771f \u2013 1.jpg",
                                  "deep/er/and/deeper/photo.jpg", "no-extension", "archive.tar.gz"])
def test_awkward_keys_round_trip(stack, path):
    stack.s3.put_object(Bucket=UPLOADS, Key=f"uploads/images/original/{path}", Body=photo(400, 300))
    deliver(stack)
    assert stack.keys(PROCESSED) == sorted(variation_keys(path) + [f"uploads/images/manifest/{path}.json"])
    assert stack.keys(BACKUP) == [f"uploads/images/original/{path}"]
    from urllib.parse import unquote

    manifest = stack.manifest(path)
    assert unquote(manifest["variations"]["small"]["url"].split("?")[0]) == f"/uploads/images/small/{path}"


def test_photo_jpg_and_photo_png_in_one_folder_keep_their_own_variations(stack):
    stack.s3.put_object(Bucket=UPLOADS, Key="uploads/images/original/2026/photo.jpg", Body=photo(800, 600))
    png = io.BytesIO()
    samples.photo(300, 600, grain=0).save(png, "PNG")
    stack.s3.put_object(Bucket=UPLOADS, Key="uploads/images/original/2026/photo.png", Body=png.getvalue())
    deliver(stack)
    jpeg_state = {k: v for k, v in stack.state(PROCESSED).items() if "photo.jpg" in k}
    assert len(jpeg_state) == 7 and stack.manifest("2026/photo.png")["variations"]["large"]["width"] == 300
    stack.s3.delete_object(Bucket=UPLOADS, Key="uploads/images/original/2026/photo.png")
    deliver(stack)
    assert {k: v for k, v in stack.state(PROCESSED).items() if "photo.jpg" in k} == jpeg_state
    assert stack.manifest("2026/photo.jpg")["status"] == "ready"
    assert stack.manifest("2026/photo.png")["status"] == "deleted"
    assert not [k for k in stack.keys(PROCESSED) if k.endswith("photo.png") and "/manifest/" not in k]


def test_an_iphone_sidecar_next_to_the_photo_fails_alone(stack):
    stack.s3.put_object(Bucket=UPLOADS, Key="uploads/images/original/IMG_0042.JPG", Body=photo(800, 600))
    stack.s3.put_object(Bucket=UPLOADS, Key="uploads/images/original/IMG_0042.AAE",
                        Body=b'<?xml version="1.0" encoding="UTF-8"?>\n<plist version="1.0"><dict/></plist>\n')
    deliver(stack)
    assert stack.manifest("IMG_0042.JPG")["status"] == "ready"
    sidecar = stack.manifest("IMG_0042.AAE")
    assert sidecar["status"] == "failed" and "not an image" in sidecar["reason"]


def test_a_second_delivery_changes_nothing(stack):
    stack.s3.put_object(Bucket=UPLOADS, Key="uploads/images/original/photo.jpg", Body=photo())
    (event,) = stack.deliveries()
    handlers.resize_handler(event, None), handlers.backup_handler(event, None)
    processed, backup = stack.state(PROCESSED), stack.state(BACKUP)
    versions = stack.s3.list_object_versions(Bucket=BACKUP)["Versions"]
    again = handlers.resize_handler(event, None), handlers.backup_handler(event, None)
    assert [r["outcome"] for r in again[0]["results"]] == ["skipped"]
    assert [r["outcome"] for r in again[1]["results"]] == ["skipped"]
    assert stack.state(PROCESSED) == processed and stack.state(BACKUP) == backup
    assert len(stack.s3.list_object_versions(Bucket=BACKUP)["Versions"]) == len(versions) == 1


def test_a_replaced_original_replaces_its_variations_and_their_versioned_urls(stack):
    key = "uploads/images/original/photo.jpg"
    stack.s3.put_object(Bucket=UPLOADS, Key=key, Body=photo(1600, 1200, seed=1))
    deliver(stack)
    before, urls = stack.state(PROCESSED), stack.manifest("photo.jpg")["variations"]
    stack.s3.put_object(Bucket=UPLOADS, Key=key, Body=photo(1200, 1600, seed=2))  # now a portrait
    deliver(stack)
    after = stack.state(PROCESSED)
    assert set(after) == set(before)
    assert all(after[k][0] != before[k][0] for k in after), "every variation and the manifest changed"
    large = Image.open(io.BytesIO(stack.s3.get_object(Bucket=PROCESSED, Key="uploads/images/large/photo.jpg")["Body"].read()))
    assert large.size == (1200, 1600)
    manifest = stack.manifest("photo.jpg")
    assert manifest["source"]["etag"] == head_etag(stack, UPLOADS, key)
    assert all(manifest["variations"][n]["url"] != urls[n]["url"] for n in DEFAULTS), "new bytes, new URLs"
    assert stack.backup_versions(key) == stack.upload_versions(key), "both versions are backed up"


def test_two_quick_writes_and_a_delete_before_the_backup_ran_all_reach_the_backup(stack):
    key = "uploads/images/original/quick.jpg"
    stack.s3.put_object(Bucket=UPLOADS, Key=key, Body=photo(400, 300, seed=1))
    stack.s3.put_object(Bucket=UPLOADS, Key=key, Body=photo(400, 300, seed=2))
    stack.s3.delete_object(Bucket=UPLOADS, Key=key)
    deliver(stack)
    assert len(stack.upload_versions(key)) == 2
    assert stack.backup_versions(key) == stack.upload_versions(key)
    bodies = {stack.s3.get_object(Bucket=BACKUP, Key=key, VersionId=v["VersionId"])["Body"].read()
              for v in stack.s3.list_object_versions(Bucket=BACKUP, Prefix=key)["Versions"]}
    assert bodies == {photo(400, 300, seed=1), photo(400, 300, seed=2)}
    assert stack.manifest("quick.jpg")["status"] == "deleted"
    assert [k for k in stack.keys(PROCESSED) if "/manifest/" not in k] == []


def test_a_removed_original_removes_its_variations_but_not_its_backup(stack):
    key = "uploads/images/original/trip/photo.jpg"
    stack.s3.put_object(Bucket=UPLOADS, Key=key, Body=photo())
    stack.s3.put_object(Bucket=UPLOADS, Key="uploads/images/original/trip/other.jpg", Body=photo(500, 400))
    deliver(stack)
    stack.s3.delete_object(Bucket=UPLOADS, Key=key)
    deliver(stack)
    assert stack.keys(PROCESSED) == sorted(variation_keys("trip/other.jpg") + ["uploads/images/manifest/trip/other.jpg.json",
                                                                               "uploads/images/manifest/trip/photo.jpg.json"])
    tombstone = stack.manifest("trip/photo.jpg")
    assert tombstone["status"] == "deleted" and tombstone["variations"] == {}
    tags = stack.s3.get_object_tagging(Bucket=PROCESSED, Key="uploads/images/manifest/trip/photo.jpg.json")["TagSet"]
    assert tags == [{"Key": "image-pipeline", "Value": "tombstone"}], "the lifecycle rule expires tombstones by tag"
    assert stack.keys(BACKUP) == sorted([key, "uploads/images/original/trip/other.jpg"])


def test_deleting_one_version_brings_back_the_previous_one(stack):
    key = "uploads/images/original/photo.jpg"
    stack.s3.put_object(Bucket=UPLOADS, Key=key, Body=photo(800, 600, seed=1))
    newer = stack.s3.put_object(Bucket=UPLOADS, Key=key, Body=photo(600, 800, seed=2))["VersionId"]
    deliver(stack)
    assert stack.manifest("photo.jpg")["variations"]["large"]["width"] == 600
    stack.s3.delete_object(Bucket=UPLOADS, Key=key, VersionId=newer)  # the older version is current again
    deliver(stack)
    manifest = stack.manifest("photo.jpg")
    assert manifest["status"] == "ready" and manifest["variations"]["large"]["width"] == 800
    assert manifest["source"]["etag"] == head_etag(stack, UPLOADS, key)


def test_a_new_variation_is_rendered_alone_when_an_event_comes_again(stack, install_plugin):
    key = "uploads/images/original/photo.jpg"
    stack.s3.put_object(Bucket=UPLOADS, Key=key, Body=photo(800, 600))
    (event,) = stack.deliveries()
    handlers.resize_handler(event, None)
    before = stack.state(PROCESSED)
    install_plugin("thumbnail_plugin", """
        from pipeline.hookspecs import hookimpl
        from pipeline.types import Variation

        @hookimpl
        def register_variations(register):
            register(Variation("thumb", "cover", 64, 64))
    """)
    handlers._registry.cache_clear()
    from pipeline.registry import _load_cached

    _load_cached.cache_clear()
    try:
        assert [r["outcome"] for r in handlers.resize_handler(event, None)["results"]] == ["processed"]
        after = stack.state(PROCESSED)
        changed = sorted(k for k in after if after[k] != before.get(k))
        assert changed == ["uploads/images/manifest/photo.jpg.json", "uploads/images/thumb/photo.jpg"]
        manifest = stack.manifest("photo.jpg")
        assert (manifest["variations"]["thumb"]["width"], manifest["variations"]["thumb"]["height"]) == (64, 64)
        assert set(manifest["variations"]) == set(DEFAULTS) | {"thumb"}
    finally:
        _load_cached.cache_clear()
        handlers._registry.cache_clear()


def test_a_text_file_named_jpg_gets_a_failed_manifest_and_a_backup_and_no_exception(stack):
    stack.s3.put_object(Bucket=UPLOADS, Key="uploads/images/original/notes.jpg", Body=b"shopping list: milk, eggs\n")
    ((resize, backup),) = deliver(stack)
    assert resize["results"][0]["outcome"] == "failed"
    assert stack.keys(PROCESSED) == ["uploads/images/manifest/notes.jpg.json"]
    manifest = stack.manifest("notes.jpg")
    assert manifest["status"] == "failed" and "not an image" in manifest["reason"]
    assert manifest["source"]["bytes"] == len(b"shopping list: milk, eggs\n")
    assert manifest["limits"]["max_bytes"] == 50 * 2**20, "a failed manifest records the limits it was judged by"
    assert stack.keys(BACKUP) == ["uploads/images/original/notes.jpg"]


def test_an_original_over_the_byte_limit_is_refused_without_downloading_it(stack, monkeypatch):
    from botocore.response import StreamingBody

    monkeypatch.setenv("PIPELINE_CONFIG", json.dumps({"max_bytes": 100_000}))
    stack.s3.put_object(Bucket=UPLOADS, Key="uploads/images/original/big.jpg", Body=photo(2000, 1500, seed=3))
    (event,) = stack.deliveries()
    read = []
    real_read = StreamingBody.read
    monkeypatch.setattr(StreamingBody, "read", lambda self, *a, **k: read.append(real_read(self, *a, **k)) or read[-1])
    result = handlers.resize_handler(event, None)
    monkeypatch.setattr(StreamingBody, "read", real_read)
    assert result["results"][0]["outcome"] == "failed" and "over the limit" in result["results"][0]["reason"]
    assert sum(map(len, read)) < 10_000, "only the (absent) manifest may be read, never the original's bytes"
    assert stack.manifest("big.jpg")["status"] == "failed"


def test_a_failed_manifest_is_retried_when_the_limits_change(stack, monkeypatch):
    monkeypatch.setenv("PIPELINE_CONFIG", json.dumps({"max_bytes": 100_000}))
    stack.s3.put_object(Bucket=UPLOADS, Key="uploads/images/original/big.jpg", Body=photo(2000, 1500, seed=3))
    (event,) = stack.deliveries()
    key = "uploads/images/original/big.jpg"
    (first,) = handlers.resize_handler(event, None)["results"]
    assert (first["outcome"], first["key"]) == ("failed", key)
    (again,) = handlers.resize_handler(event, None)["results"]
    assert (again["outcome"], again["key"]) == ("skipped", key), "same limits"
    monkeypatch.setenv("PIPELINE_CONFIG", json.dumps({"max_bytes": 10_000_000}))
    handlers._registry.cache_clear()
    (processed,) = handlers.resize_handler(event, None)["results"]
    assert (processed["outcome"], processed["key"]) == ("processed", key)
    assert stack.manifest("big.jpg")["status"] == "ready"


def test_a_late_created_event_for_an_older_oversize_version_leaves_the_current_one_alone(stack, monkeypatch):
    monkeypatch.setenv("PIPELINE_CONFIG", json.dumps({"max_bytes": 500_000}))
    key = "uploads/images/original/photo.jpg"
    stack.s3.put_object(Bucket=UPLOADS, Key=key, Body=photo(2400, 1800, seed=3))  # over the limit
    stack.s3.put_object(Bucket=UPLOADS, Key=key, Body=photo(800, 600))
    old, new = stack.deliveries()
    handlers.resize_handler(new, None)
    state = stack.state(PROCESSED)
    result = handlers.resize_handler(old, None)  # arrives late, and must not raise
    assert [r["outcome"] for r in result["results"]] == ["superseded"]
    assert stack.state(PROCESSED) == state
    manifest = stack.manifest("photo.jpg")
    assert manifest["status"] == "ready" and all(k in state for k in variation_keys("photo.jpg"))


def test_a_removal_delivered_after_a_re_upload_keeps_the_re_upload(stack):
    key = "uploads/images/original/photo.jpg"
    stack.s3.put_object(Bucket=UPLOADS, Key=key, Body=photo(800, 600))
    deliver(stack)
    stack.s3.delete_object(Bucket=UPLOADS, Key=key)
    stack.s3.put_object(Bucket=UPLOADS, Key=key, Body=photo(600, 800, seed=2))
    removed, created = stack.deliveries()
    handlers.resize_handler(created, None)
    state = stack.state(PROCESSED)
    assert [r["outcome"] for r in handlers.resize_handler(removed, None)["results"]] == ["superseded"]
    assert stack.state(PROCESSED) == state and stack.manifest("photo.jpg")["variations"]["large"]["width"] == 600


def test_an_upload_delivered_after_its_removal_was_applied_changes_nothing(stack):
    key = "uploads/images/original/photo.jpg"
    stack.s3.put_object(Bucket=UPLOADS, Key=key, Body=photo(800, 600))
    stack.s3.delete_object(Bucket=UPLOADS, Key=key)
    created, removed = stack.deliveries()
    assert [r["outcome"] for r in handlers.resize_handler(removed, None)["results"]] == ["removed"]
    state = stack.state(PROCESSED)
    # The tombstone already describes the present (no original): the late upload's event finds so
    # with a HEAD and writes nothing, not even the tombstone again.
    (late,) = handlers.resize_handler(created, None)["results"]
    assert (late["outcome"], late["key"]) == ("superseded", key)
    assert stack.state(PROCESSED) == state and stack.manifest("photo.jpg")["status"] == "deleted"


def test_a_late_upload_event_finds_a_file_left_beside_the_tombstone_and_removes_it(stack):
    """A tombstone with a variation file still there (a put that landed after the removal's
    round) does not describe the present: the late event converges, deleting the file."""
    key = "uploads/images/original/photo.jpg"
    stack.s3.put_object(Bucket=UPLOADS, Key=key, Body=photo(800, 600))
    stack.s3.delete_object(Bucket=UPLOADS, Key=key)
    created, removed = stack.deliveries()
    handlers.resize_handler(removed, None)
    stack.s3.put_object(Bucket=PROCESSED, Key="uploads/images/large/photo.jpg", Body=photo(200, 150))
    (late,) = handlers.resize_handler(created, None)["results"]
    assert late["outcome"] == "removed"
    assert stack.keys(PROCESSED) == ["uploads/images/manifest/photo.jpg.json"]


def test_removal_and_re_upload_events_without_sequencers_still_end_right(stack):
    """The current state decides, not the event: even unordered events converge."""
    key = "uploads/images/original/photo.jpg"
    stack.s3.put_object(Bucket=UPLOADS, Key=key, Body=photo(800, 600))
    deliver(stack)
    stack.s3.delete_object(Bucket=UPLOADS, Key=key)
    stack.s3.put_object(Bucket=UPLOADS, Key=key, Body=photo(600, 800, seed=2))
    removed, created = [json.loads(json.dumps(e).replace('\\"sequencer\\"', '\\"ignored\\"')) for e in stack.deliveries()]
    handlers.resize_handler(created, None)
    handlers.resize_handler(removed, None)
    assert stack.manifest("photo.jpg")["variations"]["large"]["width"] == 600
    assert all(k in stack.keys(PROCESSED) for k in variation_keys("photo.jpg"))


def test_a_slow_invocation_for_version_1_cannot_leave_its_pixels_under_version_2s_manifest(stack, monkeypatch):
    from pipeline import resize

    key = "uploads/images/original/slow.jpg"
    stack.s3.put_object(Bucket=UPLOADS, Key=key, Body=photo(800, 600, seed=1))
    (first,) = stack.deliveries()
    render = resize.outputs_for_original
    state = {"injected": False}

    def render_then_let_version_2_finish(*args, **kwargs):
        result = render(*args, **kwargs)
        if not state["injected"]:  # while v1 renders, v2 is uploaded and fully processed
            state["injected"] = True
            stack.s3.put_object(Bucket=UPLOADS, Key=key, Body=photo(600, 800, seed=2))
            (second,) = stack.deliveries()
            handlers.resize_handler(second, None)
        return result

    monkeypatch.setattr(resize, "outputs_for_original", render_then_let_version_2_finish)
    handlers.resize_handler(first, None)  # puts v1's pixels after v2's manifest, loses the commit, repairs
    manifest = stack.manifest("slow.jpg")
    assert manifest["source"]["etag"] == head_etag(stack, UPLOADS, key)
    for name in DEFAULTS:
        obj = stack.s3.get_object(Bucket=PROCESSED, Key=f"uploads/images/{name}/slow.jpg")
        assert obj["Metadata"]["source-etag"] == manifest["source"]["etag"], name
        assert Image.open(io.BytesIO(obj["Body"].read())).size == (manifest["variations"][name]["width"],
                                                                  manifest["variations"][name]["height"])


def test_a_forged_record_naming_another_bucket_is_dropped_and_deletes_nothing(stack, capfd):
    stack.s3.put_object(Bucket=UPLOADS, Key="uploads/images/original/photo.jpg", Body=photo(400, 300))
    deliver(stack)
    state = stack.state(PROCESSED)
    stack.s3.put_object(Bucket=PROCESSED, Key="uploads/images/original/photo.jpg", Body=b"x")  # a key to name
    forged = {"Records": [{"eventName": "ObjectRemoved:Delete", "s3": {
        "bucket": {"name": PROCESSED}, "object": {"key": "uploads/images/original/photo.jpg", "sequencer": "FF" * 9}}}]}
    event = {"Records": [{"EventSource": "aws:sns", "Sns": {"Message": json.dumps(forged)}}]}
    capfd.readouterr()
    assert handlers.resize_handler(event, None)["results"] == []
    stack.s3.delete_object(Bucket=PROCESSED, Key="uploads/images/original/photo.jpg")
    assert stack.state(PROCESSED) == state
    lines = [json.loads(line) for line in capfd.readouterr().out.splitlines() if line.startswith("{")]
    (dropped,) = [line for line in lines if line.get("message") == "dropped"]
    assert (dropped["level"], dropped["function"], dropped["outcome"]) == ("WARNING", "resize", "dropped")
    assert (dropped["bucket"], dropped["key"]) == (PROCESSED, "uploads/images/original/photo.jpg")
    assert "not the uploads bucket" in dropped["reason"]
    (metric,) = [line for line in lines if "_aws" in line]
    assert metric["RecordsDropped"] == [1.0] and metric["_aws"]["CloudWatchMetrics"][0]["Metrics"] == [
        {"Name": "RecordsDropped", "Unit": "Count"}]


@pytest.mark.parametrize("body", [b'"just a string"', b'{"variations": []}', b'{"manifest_version": 2, "status": "ready",'
                                  b' "source": {"key": 1}, "variations": {}}', b"not json", b'[1, 2]',
                                  b'{"manifest_version": 2, "status": "ready", "source": {"key": "k"},'
                                  b' "variations": {"large": {"key": 5}}}'])
def test_a_manifest_of_the_wrong_shape_is_treated_as_missing_and_rewritten(stack, body):
    stack.s3.put_object(Bucket=PROCESSED, Key="uploads/images/manifest/photo.jpg.json", Body=body)
    stack.s3.put_object(Bucket=UPLOADS, Key="uploads/images/original/photo.jpg", Body=photo(400, 300))
    (event,) = stack.deliveries()
    assert [r["outcome"] for r in handlers.resize_handler(event, None)["results"]] == ["processed"]
    assert stack.manifest("photo.jpg")["status"] == "ready"
    stack.s3.delete_object(Bucket=UPLOADS, Key="uploads/images/original/photo.jpg")
    stack.s3.put_object(Bucket=PROCESSED, Key="uploads/images/manifest/photo.jpg.json", Body=body)
    deliver(stack)  # a removal over a broken manifest still removes every derived variation
    assert stack.keys(PROCESSED) == ["uploads/images/manifest/photo.jpg.json"]


def test_a_plugin_that_raises_is_a_retryable_failure_not_a_failed_manifest(stack, install_plugin):
    install_plugin("exploding_plugin", """
        from pipeline.hookspecs import hookimpl
        from pipeline.types import PostProcessor

        def apply(image):
            raise ZeroDivisionError("boom")

        @hookimpl
        def register_postprocessors(register):
            register(PostProcessor("explode", apply, lambda v: v.name == "small"))
    """)
    handlers._registry.cache_clear()
    from pipeline.registry import _load_cached

    _load_cached.cache_clear()
    stack.s3.put_object(Bucket=UPLOADS, Key="uploads/images/original/photo.jpg", Body=photo(400, 300))
    stack.s3.put_object(Bucket=UPLOADS, Key="uploads/images/original/other.jpg", Body=b"not an image")
    events = stack.deliveries()
    with pytest.raises(handlers.RetryableFailure, match="plugin 'exploding_plugin' failed in apply: ZeroDivisionError"):
        handlers.resize_handler({"Records": [r for e in events for r in e["Records"]]}, None)
    assert stack.manifest("photo.jpg") is None, "the upload is fine: no failed manifest, Lambda retries"
    assert stack.manifest("other.jpg")["status"] == "failed", "the other record had its turn"
    _load_cached.cache_clear()


def test_invalidates_the_unversioned_paths_a_replacement_changed(stack, monkeypatch):
    import boto3

    cloudfront = boto3.client("cloudfront", region_name="us-east-1")
    distribution = cloudfront.create_distribution(DistributionConfig={
        "CallerReference": "t", "Comment": "", "Enabled": True,
        "Origins": {"Quantity": 1, "Items": [{"Id": "p", "DomainName": "p.s3.amazonaws.com",
                                              "S3OriginConfig": {"OriginAccessIdentity": ""}}]},
        "DefaultCacheBehavior": {"TargetOriginId": "p", "ViewerProtocolPolicy": "allow-all",
                                 "ForwardedValues": {"QueryString": False, "Cookies": {"Forward": "none"}},
                                 "MinTTL": 0, "TrustedSigners": {"Enabled": False, "Quantity": 0}}})["Distribution"]["Id"]
    monkeypatch.setenv("CDN_DISTRIBUTION_ID", distribution)

    def invalidated():
        found = []
        for item in cloudfront.list_invalidations(DistributionId=distribution)["InvalidationList"].get("Items", []):
            batch = cloudfront.get_invalidation(DistributionId=distribution, Id=item["Id"])["Invalidation"]
            found.append(sorted(batch["InvalidationBatch"]["Paths"]["Items"]))
        return found

    key = "uploads/images/original/my photo.jpg"
    stack.s3.put_object(Bucket=UPLOADS, Key=key, Body=photo(800, 600))
    deliver(stack)
    assert invalidated() == [], "a first upload has nothing cached to forget"
    stack.s3.put_object(Bucket=UPLOADS, Key=key, Body=photo(600, 800, seed=2))
    deliver(stack)
    (paths,) = invalidated()
    assert paths == sorted([f"/uploads/images/{n}/my%20photo.jpg" for n in DEFAULTS]
                           + ["/uploads/images/manifest/my%20photo.jpg.json"]), "one batch per change"


def test_a_failed_invalidation_is_logged_and_the_replacement_still_processed(stack, monkeypatch, capfd):
    monkeypatch.setenv("CDN_DISTRIBUTION_ID", "E0NOSUCHDIST")  # CloudFront answers NoSuchDistribution
    key = "uploads/images/original/cdn.jpg"
    stack.s3.put_object(Bucket=UPLOADS, Key=key, Body=photo(800, 600))
    deliver(stack)
    stack.s3.put_object(Bucket=UPLOADS, Key=key, Body=photo(600, 800, seed=2))
    (event,) = stack.deliveries()
    capfd.readouterr()
    assert handlers.resize_handler(event, None)["results"][0]["outcome"] == "processed"
    assert stack.manifest("cdn.jpg")["source"]["etag"] == head_etag(stack, UPLOADS, key)
    lines = [json.loads(line) for line in capfd.readouterr().out.splitlines() if line.startswith("{")]
    (warning,) = [line for line in lines if line.get("message") == "invalidation failed"]
    assert warning["level"] == "WARNING" and warning["function"] == "resize"
    assert "uploads/images/manifest/cdn.jpg.json" in warning["paths"] and "NoSuchDistribution" in warning["reason"]


def test_log_lines_and_metrics_are_json_with_key_outcome_and_duration(stack, capfd):
    stack.s3.put_object(Bucket=UPLOADS, Key="uploads/images/original/ok.jpg", Body=photo(400, 300))
    stack.s3.put_object(Bucket=UPLOADS, Key="uploads/images/original/bad.jpg", Body=b"nope")
    capfd.readouterr()
    for event in stack.deliveries():
        handlers.resize_handler(event, None)
    lines = [json.loads(line) for line in capfd.readouterr().out.splitlines() if line.startswith("{")]
    logs = [line for line in lines if "outcome" in line]
    assert {(l["key"], l["outcome"]) for l in logs} == {("uploads/images/original/ok.jpg", "processed"),
                                                        ("uploads/images/original/bad.jpg", "failed")}
    assert all("duration_ms" in l for l in logs)
    assert "not an image" in next(l for l in logs if l["outcome"] == "failed")["reason"]
    assert {(l["outcome"], l["message"], l["level"], l["function"]) for l in logs} == {
        ("processed", "processed", "INFO", "resize"), ("failed", "failed", "WARNING", "resize")}
    processed = next(l for l in logs if l["outcome"] == "processed")
    assert 1 <= processed["duration_ms"] < 120_000 and processed["bytes_written"] > 1000
    emf = [line for line in lines if "_aws" in line]
    names = {m["Name"] for line in emf for d in line["_aws"]["CloudWatchMetrics"] for m in d["Metrics"]}
    assert {"ImagesProcessed", "ImagesFailed", "BytesWritten", "TimePerImage"} <= names
    assert all(line["_aws"]["CloudWatchMetrics"][0]["Namespace"] == "ImagePipeline" for line in emf)


def test_s3_throttling_on_put_makes_the_resize_handler_raise_after_the_sdk_retries(stack, capfd):
    from botocore.awsrequest import AWSResponse

    stack.s3.put_object(Bucket=UPLOADS, Key="uploads/images/original/photo.jpg", Body=photo(400, 300))
    stack.s3.put_object(Bucket=UPLOADS, Key="uploads/images/original/second.jpg", Body=photo(400, 300))
    events = stack.deliveries()
    attempts = []

    class Raw:
        def stream(self, **kwargs):
            yield (b'<?xml version="1.0" encoding="UTF-8"?><Error><Code>SlowDown</Code>'
                   b"<Message>Please reduce your request rate.</Message></Error>")

    def throttle(request, **kwargs):
        if "/uploads/images/large/photo.jpg" in request.url:
            attempts.append(request.url)
            return AWSResponse(request.url, 503, {}, Raw())
        return None

    handlers.s3_client().meta.events.register("before-send.s3.PutObject", throttle)
    with pytest.raises(handlers.RetryableFailure, match="photo.jpg"):
        handlers.resize_handler({"Records": [r for e in events for r in e["Records"]]}, None)
    assert len(attempts) == 4, "the SDK tries four times (standard mode) before the handler gives up"
    assert "uploads/images/manifest/photo.jpg.json" not in stack.keys(PROCESSED)
    assert "uploads/images/manifest/second.jpg.json" in stack.keys(PROCESSED), "one bad record never blocks the others"
    lines = [json.loads(line) for line in capfd.readouterr().out.splitlines() if line.startswith("{")]
    (error,) = [line for line in lines if line.get("message") == "retryable failure"]
    assert (error["level"], error["function"], error["outcome"]) == ("ERROR", "resize", "error")
    assert error["key"] == "uploads/images/original/photo.jpg" and "SlowDown" in error["reason"]
    assert 1 <= error["duration_ms"] < 120_000, "milliseconds of this record's attempt"
    (metric,) = [line for line in lines if "_aws" in line]
    assert metric["ImagesErrored"] == [1.0] and metric["ImagesProcessed"] == [1.0]


def test_an_original_deleted_before_processing_is_removed_and_still_backed_up(stack):
    key = "uploads/images/original/gone.jpg"
    version = stack.s3.put_object(Bucket=UPLOADS, Key=key, Body=photo(400, 300))["VersionId"]
    stack.s3.delete_object(Bucket=UPLOADS, Key=key)
    created, removed = stack.deliveries()
    assert [r["outcome"] for r in handlers.resize_handler(created, None)["results"]] == ["removed"]
    assert [r["outcome"] for r in handlers.backup_handler(created, None)["results"]] == ["processed"]
    assert [r["outcome"] for r in handlers.resize_handler(removed, None)["results"]] == ["skipped"]
    assert stack.keys(PROCESSED) == ["uploads/images/manifest/gone.jpg.json"]
    assert stack.backup_versions(key) == {version}


def test_a_version_deleted_for_good_before_the_backup_ran_is_gone_not_an_error(stack):
    key = "uploads/images/original/gone.jpg"
    version = stack.s3.put_object(Bucket=UPLOADS, Key=key, Body=photo(400, 300))["VersionId"]
    stack.s3.delete_object(Bucket=UPLOADS, Key=key, VersionId=version)
    created, *_ = stack.deliveries()
    assert [r["outcome"] for r in handlers.backup_handler(created, None)["results"]] == ["gone"]
    assert stack.keys(BACKUP) == []


def test_the_backup_reports_each_record_with_its_key_and_what_it_did(stack, capfd):
    key = "uploads/images/original/a b.jpg"
    version = stack.s3.put_object(Bucket=UPLOADS, Key=key, Body=photo(400, 300))["VersionId"]
    (event,) = stack.deliveries()
    capfd.readouterr()
    first = handlers.backup_handler(event, None)["results"]
    logged = [json.loads(line) for line in capfd.readouterr().out.splitlines() if '"outcome"' in line]
    assert first == [{"key": key, "outcome": "processed", "reason": None}]
    assert logged[0]["bytes_written"] == len(photo(400, 300))
    again = handlers.backup_handler(event, None)["results"]
    assert again == [{"key": key, "outcome": "skipped", "reason": f"the backup already holds version {version}"}]
    stack.s3.delete_object(Bucket=UPLOADS, Key=key, VersionId=version)
    stack.deliveries()
    handlers.backup_handler(event, None)  # already backed up: still skipped, the version is not needed
    backup_versions = stack.s3.list_object_versions(Bucket=BACKUP, Prefix=key)["Versions"]
    for item in backup_versions:  # start over without the copy, so the vanished version is "gone"
        stack.s3.delete_object(Bucket=BACKUP, Key=key, VersionId=item["VersionId"])
    gone = handlers.backup_handler(event, None)["results"]
    assert gone == [{"key": key, "outcome": "gone", "reason": f"version {version} no longer exists; nothing to copy"}]


def _die_before_the_next_commit(monkeypatch, state):
    from pipeline.storage import S3Store

    real = S3Store.put_manifest

    def put_manifest(self, bucket, obj, *, replacing):
        if state.pop("crash", False):
            raise TimeoutError("Task timed out after 60.00 seconds")  # Lambda ends the invocation here
        return real(self, bucket, obj, replacing=replacing)

    monkeypatch.setattr(S3Store, "put_manifest", put_manifest)


def test_a_round_that_dies_after_overwriting_a_newer_versions_files_is_repaired_by_its_retry(stack, monkeypatch):
    from pipeline.storage import S3Store

    key = "uploads/images/original/slow.jpg"
    stack.s3.put_object(Bucket=UPLOADS, Key=key, Body=photo(800, 600, seed=1))
    (first,) = stack.deliveries()
    state = {}
    _die_before_the_next_commit(monkeypatch, state)
    real_put = S3Store.put

    def put_after_version_2_finished(self, bucket, obj):
        if "injected" not in state:  # before v1's first put, v2 is uploaded and fully processed
            state["injected"] = True
            stack.s3.put_object(Bucket=UPLOADS, Key=key, Body=photo(600, 800, seed=2))
            (second,) = stack.deliveries()
            handlers.resize_handler(second, None)
            state["crash"] = True  # v1's round puts its files over v2's, then dies before its commit
        return real_put(self, bucket, obj)

    monkeypatch.setattr(S3Store, "put", put_after_version_2_finished)
    with pytest.raises(handlers.RetryableFailure):
        handlers.resize_handler(first, None)
    assert [r["outcome"] for r in handlers.resize_handler(first, None)["results"]] == ["processed"]  # Lambda's retry
    manifest = stack.manifest("slow.jpg")
    assert manifest["source"]["etag"] == head_etag(stack, UPLOADS, key)
    assert_files_made_from(stack, "slow.jpg", manifest["source"]["etag"])


def test_a_removal_that_dies_after_deleting_a_re_uploads_files_is_repaired_by_its_retry(stack, monkeypatch):
    from pipeline.storage import S3Store

    key = "uploads/images/original/gone.jpg"
    stack.s3.put_object(Bucket=UPLOADS, Key=key, Body=photo(800, 600, seed=1))
    deliver(stack)
    stack.s3.delete_object(Bucket=UPLOADS, Key=key)
    (removed,) = stack.deliveries()
    state = {}
    real_delete = S3Store.delete

    def delete(self, bucket, keys):
        if "reuploaded" not in state:  # between the removal's GET (gone) and its deletes, v2 arrives
            state["reuploaded"] = True
            stack.s3.put_object(Bucket=UPLOADS, Key=key, Body=photo(600, 800, seed=2))
            (created,) = stack.deliveries()
            handlers.resize_handler(created, None)
            state["crash"] = True
        return real_delete(self, bucket, keys)

    monkeypatch.setattr(S3Store, "delete", delete)
    _die_before_the_next_commit(monkeypatch, state)
    with pytest.raises(handlers.RetryableFailure):
        handlers.resize_handler(removed, None)
    handlers.resize_handler(removed, None)  # Lambda's retry
    manifest = stack.manifest("gone.jpg")
    assert manifest["status"] == "ready" and manifest["variations"]["large"]["width"] == 600
    assert all(k in stack.keys(PROCESSED) for k in variation_keys("gone.jpg")), "the re-upload's files are back"


def test_one_record_with_a_huge_sequencer_cannot_freeze_the_key(stack):
    key = "uploads/images/original/photo.jpg"
    stack.s3.put_object(Bucket=UPLOADS, Key=key, Body=photo(800, 600))
    (created,) = stack.deliveries()
    for forged in ("F" * 32, "F" * 40, "not hex"):
        message = json.loads(created["Records"][0]["Sns"]["Message"])
        message["Records"][0]["s3"]["object"]["sequencer"] = forged  # replayed, forged or garbled
        handlers.resize_handler({"Records": [{"EventSource": "aws:sns", "Sns": {"Message": json.dumps(message)}}]}, None)
    assert stack.manifest("photo.jpg")["source"]["sequencer"] == "F" * 32, "only S3-shaped sequencers are kept"
    stack.s3.put_object(Bucket=UPLOADS, Key=key, Body=photo(600, 800, seed=2))  # a genuine replacement
    (replaced,) = stack.deliveries()
    assert [r["outcome"] for r in handlers.resize_handler(replaced, None)["results"]] == ["processed"]
    assert stack.manifest("photo.jpg")["variations"]["large"]["width"] == 600


def test_sequencers_of_different_lengths_are_ordered_as_numbers(stack):
    """S3's sequencers compare as hexadecimal numbers (the shorter left-padded), not as text:
    "100" comes after "FF"."""
    def sequenced(delivery: dict, sequencer: str) -> dict:
        message = json.loads(delivery["Records"][0]["Sns"]["Message"])
        message["Records"][0]["s3"]["object"]["sequencer"] = sequencer
        return {"Records": [{"EventSource": "aws:sns", "Sns": {"Message": json.dumps(message)}}]}

    key = "uploads/images/original/photo.jpg"
    stack.s3.put_object(Bucket=UPLOADS, Key=key, Body=photo(800, 600))
    (first,) = stack.deliveries()
    handlers.resize_handler(sequenced(first, "FF"), None)
    stack.s3.put_object(Bucket=UPLOADS, Key=key, Body=photo(600, 800, seed=2))
    (second,) = stack.deliveries()
    handlers.resize_handler(sequenced(second, "100"), None)
    assert stack.manifest("photo.jpg")["source"]["sequencer"] == "100"
    assert handlers.resize_handler(sequenced(first, "FF"), None)["results"] == [
        {"key": key, "outcome": "superseded", "reason": "a later event for this key was already applied"}]
    assert stack.manifest("photo.jpg")["variations"]["large"]["width"] == 600


def test_a_manifest_listing_another_originals_files_cannot_make_a_removal_delete_them(stack):
    stack.s3.put_object(Bucket=UPLOADS, Key="uploads/images/original/victim.jpg", Body=photo(400, 300))
    stack.s3.put_object(Bucket=UPLOADS, Key="uploads/images/original/a.jpg", Body=photo(400, 300, seed=2))
    deliver(stack)
    victim = {k: v for k, v in stack.state(PROCESSED).items() if "victim" in k}
    manifest = stack.manifest("a.jpg")
    manifest["variations"]["large"]["key"] = "uploads/images/large/victim.jpg"
    manifest["variations"]["large"]["alternates"] = [{"key": "uploads/images/manifest/victim.jpg.json"}]
    stack.s3.put_object(Bucket=PROCESSED, Key="uploads/images/manifest/a.jpg.json", Body=json.dumps(manifest))
    stack.s3.delete_object(Bucket=UPLOADS, Key="uploads/images/original/a.jpg")
    deliver(stack)
    assert {k: v for k, v in stack.state(PROCESSED).items() if "victim" in k} == victim
    assert stack.manifest("a.jpg")["status"] == "deleted"
    assert [k for k in stack.keys(PROCESSED) if k.endswith("/a.jpg")] == []


def test_a_manifest_whose_entries_have_no_alternates_is_still_checked_and_kept(stack):
    """`alternates` may be left out of an entry (the manifest's schema allows it): a redelivered
    event checks the files such a manifest lists and finds nothing to do."""
    stack.s3.put_object(Bucket=UPLOADS, Key="uploads/images/original/a.jpg", Body=photo(400, 300))
    (event,) = stack.deliveries()
    handlers.resize_handler(event, None)
    manifest = stack.manifest("a.jpg")
    for entry in manifest["variations"].values():
        assert entry.pop("alternates") == []
    stack.s3.put_object(Bucket=PROCESSED, Key="uploads/images/manifest/a.jpg.json", Body=json.dumps(manifest))
    state = stack.state(PROCESSED)
    assert [r["outcome"] for r in handlers.resize_handler(event, None)["results"]] == ["skipped"]
    assert stack.state(PROCESSED) == state


def test_an_original_whose_longest_key_is_s3s_limit_exactly_is_processed(stack):
    path = "p/" + "x" * (1024 - len("uploads/images/square_medium/p/") - len(".jpg")) + ".jpg"
    stack.s3.put_object(Bucket=UPLOADS, Key=f"uploads/images/original/{path}", Body=photo(400, 300))
    (event,) = stack.deliveries()
    assert [r["outcome"] for r in handlers.resize_handler(event, None)["results"]] == ["processed"]
    assert len(f"uploads/images/square_medium/{path}".encode()) == 1024
    assert f"uploads/images/square_medium/{path}" in stack.keys(PROCESSED)


def test_an_original_whose_keys_would_pass_s3s_limit_fails_without_writing_anything(stack):
    path = "p/" + "x" * (1020 - len("uploads/images/original/p/") - len(".jpg")) + ".jpg"
    stack.s3.put_object(Bucket=UPLOADS, Key=f"uploads/images/original/{path}", Body=photo(400, 300))
    (event,) = stack.deliveries()
    (result,) = handlers.resize_handler(event, None)["results"]
    assert result["outcome"] == "failed" and "over S3's limit of 1024" in result["reason"]
    assert result["key"] == f"uploads/images/original/{path}"
    assert stack.keys(PROCESSED) == [], "no orphan files: nothing that would need a key too long is written"


def test_a_plugin_variation_whose_key_would_pass_s3s_limit_fails_the_original_cleanly(stack, install_plugin):
    """The longest key an original needs may be a plugin variation's, not its manifest's."""
    from pipeline.registry import _load_cached

    install_plugin("social_cards", """
        from pipeline.hookspecs import hookimpl
        from pipeline.types import Variation

        @hookimpl
        def register_variations(register):
            register(Variation("panorama_for_social_cards", "cover", 120, 40))
    """)
    _load_cached.cache_clear()
    handlers._registry.cache_clear()
    try:
        # The original's key and its manifest's fit S3's 1024 bytes; the plugin variation's would not.
        path = "p/" + "x" * (1024 - len("uploads/images/manifest/p/") - len(".jpg.json")) + ".jpg"
        stack.s3.put_object(Bucket=UPLOADS, Key=f"uploads/images/original/{path}", Body=photo(400, 300))
        (event,) = stack.deliveries()
        (result,) = handlers.resize_handler(event, None)["results"]
        assert result["outcome"] == "failed" and "uploads/images/panorama_for_social_cards/p/" in result["reason"]
        assert stack.keys(PROCESSED) == []
    finally:  # the next tests load the registry without this plugin
        _load_cached.cache_clear()
        handlers._registry.cache_clear()


def test_a_round_after_a_lost_commit_reads_the_manifest_again_even_when_handed_one(stack):
    """The backfill hands apply_change the manifest it read; once another writer has replaced it,
    the next round must read the new one, or its commit is conditional on a gone ETag."""
    key = "uploads/images/original/photo.jpg"
    stack.s3.put_object(Bucket=UPLOADS, Key=key, Body=photo(400, 300))
    store = S3Store(stack.s3)
    change = ObjectChange("created", "ObjectCreated:Put", UPLOADS, key)
    resize.apply_change(store, change, PROCESSED, handlers._registry())
    stored = store.read_manifest(PROCESSED, "uploads/images/manifest/photo.jpg.json")
    put_manifest, writes = store.put_manifest, []

    def another_writer_first(bucket, obj, *, replacing):
        if not writes:  # someone else commits between this round's read and its commit
            writes.append(stack.s3.put_object(Bucket=bucket, Key=obj.key, Body=obj.body))
        return put_manifest(bucket, obj, replacing=replacing)

    store.put_manifest = another_writer_first
    outcome = resize.apply_change(store, change, PROCESSED, handlers._registry(),
                                  scope=resize.Scope(force=True), stored=stored)
    assert (outcome.outcome, outcome.rounds) == ("processed", 2)


def test_a_removal_deletes_the_files_of_a_variation_no_longer_defined(stack, monkeypatch):
    key = "uploads/images/original/photo.jpg"
    stack.s3.put_object(Bucket=UPLOADS, Key=key, Body=photo(400, 300))
    deliver(stack)
    assert "uploads/images/xsmall/photo.jpg" in stack.keys(PROCESSED)
    monkeypatch.setenv("PIPELINE_CONFIG", json.dumps({"disabled_variations": ["xsmall"]}))
    handlers._registry.cache_clear()
    stack.s3.delete_object(Bucket=UPLOADS, Key=key)
    deliver(stack)
    assert stack.keys(PROCESSED) == ["uploads/images/manifest/photo.jpg.json"], "the manifest listed it: it goes too"


def test_a_replacement_invalidates_a_variation_its_previous_manifest_lacked(stack, monkeypatch):
    """The CDN may hold a 404 for a variation added since the last upload: its key is invalidated
    with the files that changed."""
    key = "uploads/images/original/photo.jpg"
    monkeypatch.setenv("PIPELINE_CONFIG", json.dumps({"disabled_variations": ["xsmall"]}))
    handlers._registry.cache_clear()
    stack.s3.put_object(Bucket=UPLOADS, Key=key, Body=photo(400, 300))
    deliver(stack)
    monkeypatch.setenv("PIPELINE_CONFIG", "{}")
    handlers._registry.cache_clear()
    stack.s3.put_object(Bucket=UPLOADS, Key=key, Body=photo(300, 400, seed=2))
    stack.deliveries()  # handled below, by apply_change with an invalidation to see
    invalidated = []
    change = ObjectChange("created", "ObjectCreated:Put", UPLOADS, key)
    resize.apply_change(S3Store(stack.s3), change, PROCESSED, handlers._registry(), invalidate=invalidated.extend)
    assert "uploads/images/xsmall/photo.jpg" in invalidated
    assert {"uploads/images/large/photo.jpg", "uploads/images/manifest/photo.jpg.json"} <= set(invalidated)


@pytest.mark.parametrize("lost", [resize.MAX_ROUNDS - 1, resize.MAX_ROUNDS])
def test_a_commit_lost_to_other_writers_is_tried_again_up_to_max_rounds(stack, lost):
    """Each round that loses its manifest commit starts again from a fresh read; after MAX_ROUNDS
    the record fails with ContendedKey, and its retry (Lambda's, or the queue's) takes over."""
    key = "uploads/images/original/photo.jpg"
    stack.s3.put_object(Bucket=UPLOADS, Key=key, Body=photo(400, 300))
    store, commits = S3Store(stack.s3), []
    put_manifest = store.put_manifest

    def losing(bucket, obj, *, replacing):
        commits.append(replacing)
        if len(commits) <= lost:
            raise Conflict("another writer committed first")
        return put_manifest(bucket, obj, replacing=replacing)

    store.put_manifest = losing
    change = ObjectChange("created", "ObjectCreated:Put", UPLOADS, key)
    if lost == resize.MAX_ROUNDS:
        with pytest.raises(resize.ContendedKey, match=f"{key}: {resize.MAX_ROUNDS} rounds each lost the manifest"):
            resize.apply_change(store, change, PROCESSED, handlers._registry())
        assert stack.manifest("photo.jpg") is None
    else:
        outcome = resize.apply_change(store, change, PROCESSED, handlers._registry())
        assert (outcome.outcome, outcome.rounds) == ("processed", resize.MAX_ROUNDS)
        assert stack.manifest("photo.jpg")["status"] == "ready"
        stored = stack.s3.list_objects_v2(Bucket=PROCESSED)["Contents"]
        assert outcome.bytes_written == sum(o["Size"] for o in stored)  # the files and the manifest
    assert len(commits) == min(lost + 1, resize.MAX_ROUNDS)


def test_a_removed_original_with_a_control_character_in_its_key_loses_its_variations(stack):
    key = "uploads/images/original/IMG\x01 0042.jpg"  # legal in S3; an XML body cannot carry U+0001
    stack.s3.put_object(Bucket=UPLOADS, Key=key, Body=photo(400, 300))
    for event in stack.deliveries():  # the resize function only: moto cannot list such a key back
        handlers.resize_handler(event, None)
    assert stack.manifest("IMG\x01 0042.jpg")["status"] == "ready"
    stack.s3.delete_object(Bucket=UPLOADS, Key=key)
    for event in stack.deliveries():
        handlers.resize_handler(event, None)
    assert stack.manifest("IMG\x01 0042.jpg")["status"] == "deleted"
    assert [k for k in stack.keys(PROCESSED) if "/manifest/" not in k] == []


@pytest.mark.parametrize("path", ["x/../victim.jpg", "./a.jpg", "a//b.jpg"])
def test_a_path_whose_urls_would_resolve_elsewhere_is_dropped(stack, path):
    stack.s3.put_object(Bucket=UPLOADS, Key=f"uploads/images/original/{path}", Body=photo(400, 300))
    (event,) = stack.deliveries()
    assert handlers.resize_handler(event, None)["results"] == []
    assert stack.keys(PROCESSED) == []


def test_a_version_named_null_is_never_taken_for_one_already_backed_up():
    """"null" names whatever a bucket without versioning holds now: two uploads, one name."""
    from pipeline.backup import backup_created
    from pipeline.events import ObjectChange

    class Store:
        copied: list = []

        def backed_up_versions(self, bucket, key):
            return {"null"}

        def copy_version(self, source_bucket, key, version_id, target_bucket):
            self.copied.append(version_id)
            return {"ContentLength": 1}

    store = Store()
    change = ObjectChange("created", "ObjectCreated:Put", "uploads", "uploads/images/original/a.jpg", 10, "e2",
                          "0062D1A0B3C4D5E6F8", "null")
    assert backup_created(store, change, "backup").outcome == "processed" and store.copied == ["null"]


class _Eager(Executor):
    """Runs each concurrent call at once, in order: the original is read before the manifest."""

    def submit(self, fn, /, *args, **kwargs) -> Future:
        future: Future = Future()
        future.set_result(fn(*args, **kwargs))
        return future


def test_an_original_read_before_a_newer_manifest_is_read_again_before_a_forced_round(stack, monkeypatch):
    """The first round reads the original and the manifest at once. Here the original's answer (v1)
    predates the manifest's (v2, written meanwhile, whose files a dead round left damaged): the
    repair round must render what is current, v2, not the stale v1 it already holds."""
    from pipeline.events import object_changes
    from pipeline.registry import load_registry
    from pipeline.config import PipelineConfig
    from pipeline.resize import apply_change
    from pipeline.storage import S3Store

    key = "uploads/images/original/early.jpg"
    stack.s3.put_object(Bucket=UPLOADS, Key=key, Body=photo(800, 600, seed=1))
    (first,) = object_changes(stack.deliveries()[0], UPLOADS).accepted
    real_read = S3Store.read_manifest
    state = {}

    def v2_lands_between_the_two_reads(self, bucket, manifest_key):
        if not state:
            state["v2"] = True
            stack.s3.put_object(Bucket=UPLOADS, Key=key, Body=photo(600, 800, seed=2))
            deliver(stack)
            stack.s3.put_object(Bucket=PROCESSED, Key="uploads/images/large/early.jpg", Body=b"left by a dead round")
        return real_read(self, bucket, manifest_key)

    monkeypatch.setattr(S3Store, "read_manifest", v2_lands_between_the_two_reads)
    registry = load_registry(PipelineConfig())
    outcome = apply_change(S3Store(stack.s3), first, PROCESSED, registry, calls=_Eager())
    assert outcome.outcome == "processed"
    manifest = stack.manifest("early.jpg")
    assert manifest["source"]["etag"] == head_etag(stack, UPLOADS, key)
    assert manifest["variations"]["large"]["width"] == 600  # v2 is portrait
    assert_files_made_from(stack, "early.jpg", manifest["source"]["etag"])


def test_a_failed_put_fails_the_record_and_leaves_the_manifest_as_it_was(stack, monkeypatch):
    from pipeline.storage import S3Store

    key = "uploads/images/original/flaky.jpg"
    stack.s3.put_object(Bucket=UPLOADS, Key=key, Body=photo(800, 600, seed=1))
    deliver(stack)
    before = stack.s3.get_object(Bucket=PROCESSED, Key="uploads/images/manifest/flaky.jpg.json")["Body"].read()
    stack.s3.put_object(Bucket=UPLOADS, Key=key, Body=photo(600, 800, seed=2))
    (event,) = stack.deliveries()
    real_put = S3Store.put

    def put(self, bucket, obj):
        if "/small/" in obj.key:
            raise TimeoutError(f"s3://{bucket}/{obj.key}: Read timeout on endpoint URL")
        return real_put(self, bucket, obj)

    monkeypatch.setattr(S3Store, "put", put)
    with pytest.raises(handlers.RetryableFailure):
        handlers.resize_handler(event, None)
    after = stack.s3.get_object(Bucket=PROCESSED, Key="uploads/images/manifest/flaky.jpg.json")["Body"].read()
    assert after == before  # not committed: Lambda's retry does it all again
    monkeypatch.setattr(S3Store, "put", real_put)
    handlers.resize_handler(event, None)
    assert stack.manifest("flaky.jpg")["source"]["etag"] == head_etag(stack, UPLOADS, key)


def test_files_are_put_while_others_render_and_the_manifest_only_after_every_put(stack, monkeypatch):
    """With real threads: the two reads overlap, a file is put while a later variation is still to
    be encoded, and the manifest's put starts only after every file's put has ended."""
    import threading
    import time

    from pipeline import imaging
    from pipeline.storage import S3Store

    events, lock, a_put_started = [], threading.Lock(), threading.Event()

    def timed(name, method):
        def call(self, *args, **kwargs):
            with lock:
                events.append((time.perf_counter(), "start", name))
            if name == "put":
                a_put_started.set()
            try:
                return method(self, *args, **kwargs)
            finally:
                time.sleep(0.05)  # S3's latency, so that calls that overlap do so measurably
                with lock:
                    events.append((time.perf_counter(), "end", name))
        return call

    for name in ("get_original", "read_manifest", "put", "put_manifest"):
        monkeypatch.setattr(S3Store, name, timed(name, getattr(S3Store, name)))
    real_encoded, encodes, seen = imaging._encoded, [], []

    def encoded(registry, encoder, image):
        with lock:
            encodes.append(image.size)
            last = len(encodes) == 6
        if last:  # the sixth and last encode: had a file's put begun? (it would never, were puts after rendering)
            seen.append(a_put_started.wait(timeout=10))
        return real_encoded(registry, encoder, image)

    monkeypatch.setattr(imaging, "_encoded", encoded)
    stack.s3.put_object(Bucket=UPLOADS, Key="uploads/images/original/busy.jpg", Body=photo(1600, 1200))
    deliver(stack)

    def when(kind, name):
        return [t for t, k, n in events if (k, n) == (kind, name)]

    assert seen == [True], "files are put while the last variation is still to be encoded"
    assert len(when("start", "put")) == 6
    assert max(when("end", "put")) < min(when("start", "put_manifest")), "the manifest goes last"
    assert min(when("start", "get_original")) < min(when("end", "read_manifest")), "the two reads overlap"


def _changes(stack):
    from pipeline.events import object_changes

    (delivery,) = stack.deliveries()
    return object_changes(delivery, UPLOADS).accepted


@pytest.mark.parametrize("third", ["put v3", "delete", "redelivered v2"])
def test_an_original_read_with_the_manifest_is_confirmed_when_the_manifest_names_another_version(
        stack, monkeypatch, third):
    """E2 reads v2 together with the manifest; before the manifest's answer, the original changes
    (v3 or a removal) and an older event converges to that present under its own, older sequencer
    (a late E1, or E2 delivered again), so the newest event finds nothing to do. E2's read is then
    stale with nothing newer to redo it: a HEAD after the manifest must catch it."""
    from pipeline.config import PipelineConfig
    from pipeline.registry import load_registry
    from pipeline.resize import apply_change
    from pipeline.storage import S3Store

    key = "uploads/images/original/race.jpg"
    registry = load_registry(PipelineConfig())
    stack.s3.put_object(Bucket=UPLOADS, Key=key, Body=photo(800, 600, seed=1))
    (e1,) = _changes(stack)
    if third == "redelivered v2":
        apply_change(S3Store(stack.s3), e1, PROCESSED, registry)
    stack.s3.put_object(Bucket=UPLOADS, Key=key, Body=photo(600, 800, seed=2))
    (e2,) = _changes(stack)
    real_read = S3Store.read_manifest
    outcomes = {}

    def meanwhile(self, bucket, manifest_key):
        if not outcomes:
            outcomes["started"] = True
            if third == "delete":
                stack.s3.delete_object(Bucket=UPLOADS, Key=key)
            else:
                stack.s3.put_object(Bucket=UPLOADS, Key=key, Body=photo(700, 700, seed=3))
            (e3,) = _changes(stack)
            monkeypatch.setattr(S3Store, "read_manifest", real_read)
            older = e2 if third == "redelivered v2" else e1
            outcomes["older"] = apply_change(S3Store(stack.s3), older, PROCESSED, registry).outcome
            outcomes["e3"] = apply_change(S3Store(stack.s3), e3, PROCESSED, registry).outcome
            monkeypatch.setattr(S3Store, "read_manifest", meanwhile)
        return real_read(self, bucket, manifest_key)

    monkeypatch.setattr(S3Store, "read_manifest", meanwhile)
    apply_change(S3Store(stack.s3), e2, PROCESSED, registry, calls=_Eager())
    assert outcomes["e3"] in ("skipped", "superseded")  # the schedule that leaves nothing newer to redo it
    manifest = stack.manifest("race.jpg")
    if third == "delete":
        assert manifest["status"] == "deleted" and not [k for k in stack.keys(PROCESSED) if "/manifest/" not in k]
    else:
        assert manifest["source"]["etag"] == head_etag(stack, UPLOADS, key)


def test_a_plugin_failing_part_way_through_a_replacement_leaves_the_live_files_alone(stack, monkeypatch):
    """A new upload's files go out while it renders; a replacement's wait for the whole rendering, so
    a plugin failing on the new version never leaves the live manifest listing its pixels."""
    from pipeline import imaging
    from pipeline.types import PluginFailure

    key = "uploads/images/original/pf.jpg"
    stack.s3.put_object(Bucket=UPLOADS, Key=key, Body=photo(800, 600, seed=1))
    deliver(stack)
    live = stack.manifest("pf.jpg")
    real = imaging._encoded

    def encoded(registry, encoder, image):
        if image.size == (150, 150):
            raise PluginFailure("jpeg", "encode", "a plugin bug this upload hits")
        return real(registry, encoder, image)

    monkeypatch.setattr(imaging, "_encoded", encoded)
    stack.s3.put_object(Bucket=UPLOADS, Key=key, Body=photo(600, 800, seed=2))
    (event,) = stack.deliveries()
    with pytest.raises(handlers.RetryableFailure):
        handlers.resize_handler(event, None)
    assert stack.manifest("pf.jpg")["source"]["etag"] == live["source"]["etag"]
    assert_files_made_from(stack, "pf.jpg", live["source"]["etag"])


def _redelivered(stack, key: str, body: bytes | None) -> tuple[dict, list[dict]]:
    """Upload (or remove, for None) `key`, process it, and keep its event for a second delivery."""
    if body is None:
        stack.s3.delete_object(Bucket=UPLOADS, Key=key)
    else:
        stack.s3.put_object(Bucket=UPLOADS, Key=key, Body=body)
    (event,) = stack.deliveries()
    handlers.resize_handler(event, None)
    return event, stack.keys(PROCESSED)


@pytest.mark.parametrize("state", ["removed", "failed"])
def test_a_file_left_under_a_manifest_with_no_files_goes_when_the_event_comes_again(stack, state):
    """A round that died after putting a file (a timeout) leaves it under a tombstone or a failed
    manifest; the event's next delivery finds nothing to do, checks, and deletes it."""
    key = "uploads/images/original/left.jpg"
    stack.s3.put_object(Bucket=UPLOADS, Key=key, Body=photo(800, 600))
    deliver(stack)
    event, _ = _redelivered(stack, key, None if state == "removed" else b"not an image at all")
    assert stack.manifest("left.jpg")["status"] == ("deleted" if state == "removed" else "failed")
    stack.s3.put_object(Bucket=PROCESSED, Key="uploads/images/small/left.jpg", Body=b"left by a dead round",
                        Metadata={"source-etag": "x", "spec-hash": "y"})
    handlers.resize_handler(event, None)
    assert [k for k in stack.keys(PROCESSED) if "/manifest/" not in k] == []


def test_a_missing_alternate_is_put_back_when_the_event_comes_again(stack, monkeypatch):
    monkeypatch.setenv("PIPELINE_CONFIG", json.dumps({"plugins": {"webp": {"enabled": True}}}))
    key = "uploads/images/original/alt.jpg"
    event, stored = _redelivered(stack, key, photo(800, 600))
    assert "uploads/images/medium.webp/alt.jpg" in stored
    stack.s3.delete_object(Bucket=PROCESSED, Key="uploads/images/medium.webp/alt.jpg")
    handlers.resize_handler(event, None)
    assert sorted(stack.keys(PROCESSED)) == sorted(stored)
    # The repaired manifest still records the event's sequencer: an older event stays recognisable.
    assert stack.manifest("alt.jpg")["source"]["sequencer"] == event_sequencer(event)


def _requests(client) -> list[tuple[str, str]]:
    """Every request `client` sends from now on, as (operation, key)."""
    sent: list[tuple[str, str]] = []
    client.meta.events.register("before-parameter-build.s3", lambda model=None, params=None, **_: sent.append(
        (model.name, params.get("Key", ""))))
    return sent


def test_a_new_upload_costs_nine_requests_and_a_repeated_event_no_head_of_the_original(stack):
    """The original's read with the manifest needs no confirming HEAD where there was no manifest,
    nor where the manifest names the version read (a second delivery of the same event)."""
    key = "uploads/images/original/nine.jpg"
    stack.s3.put_object(Bucket=UPLOADS, Key=key, Body=photo(800, 600))
    (event,) = stack.deliveries()
    sent = _requests(handlers.s3_client())
    handlers.resize_handler(event, None)
    assert sorted(op for op, _ in sent) == sorted(["GetObject"] * 2 + ["PutObject"] * 7)
    sent.clear()
    assert handlers.resize_handler(event, None)["results"] == [{"key": key, "outcome": "skipped", "reason": "up to date"}]
    assert ("HeadObject", key) not in sent and ("GetObject", key) in sent
    # A replacement: the manifest names the version replaced, so a HEAD confirms the read, not a second download.
    stack.s3.put_object(Bucket=UPLOADS, Key=key, Body=photo(600, 800, seed=2))
    (replacement,) = stack.deliveries()
    sent.clear()
    assert handlers.resize_handler(replacement, None)["results"][0]["outcome"] == "processed"
    assert [request for request in sent if request[1] == key] == [("GetObject", key), ("HeadObject", key)]


@pytest.mark.parametrize("at_the_limit", [False, True])
def test_a_file_missing_under_an_up_to_date_manifest_is_rendered_again_from_a_download(stack, monkeypatch,
                                                                                       at_the_limit):
    """Nothing to render, as far as the manifest says: a HEAD of the original, then the files'
    check finds one missing, and the round downloads the original and renders it again (one of
    exactly max_bytes too: the limit itself is allowed)."""
    key, body = "uploads/images/original/gap.jpg", photo(800, 600)
    if at_the_limit:
        monkeypatch.setenv("PIPELINE_CONFIG", json.dumps({"max_bytes": len(body)}))
    stack.s3.put_object(Bucket=UPLOADS, Key=key, Body=body)
    change = ObjectChange("created", "ObjectCreated:Put", UPLOADS, key)  # no sequencer: no early read
    store, registry = S3Store(stack.s3), handlers._registry()
    assert resize.apply_change(store, change, PROCESSED, registry).outcome == "processed"
    stored = stack.keys(PROCESSED)
    stack.s3.delete_object(Bucket=PROCESSED, Key="uploads/images/medium/gap.jpg")
    sent = _requests(stack.s3)
    assert resize.apply_change(store, change, PROCESSED, registry).outcome == "processed"
    assert sorted(stack.keys(PROCESSED)) == sorted(stored)
    assert [request for request in sent if request[1] == key] == [("HeadObject", key), ("GetObject", key)]
    assert_files_made_from(stack, "gap.jpg", head_etag(stack, UPLOADS, key))


def _created(key: str) -> ObjectChange:
    return ObjectChange("created", "ObjectCreated:Put", UPLOADS, key)  # no sequencer: no early read


def test_a_failed_upload_uploaded_again_is_judged_again_from_a_download(stack):
    """A manifest that is not "ready" never lets a HEAD stand in for the bytes."""
    key, store, registry = "uploads/images/original/list.jpg", S3Store(stack.s3), handlers._registry()
    stack.s3.put_object(Bucket=UPLOADS, Key=key, Body=b"shopping list\n")
    assert resize.apply_change(store, _created(key), PROCESSED, registry).outcome == "failed"
    second = stack.s3.put_object(Bucket=UPLOADS, Key=key, Body=b"shopping list\n")["VersionId"]
    outcome = resize.apply_change(store, _created(key), PROCESSED, registry)
    assert (outcome.outcome, "not an image" in outcome.reason) == ("failed", True)
    assert stack.manifest("list.jpg")["source"]["version_id"] == second


def test_a_new_version_of_the_same_bytes_keeps_the_entries_a_backfill_without_prune_keeps(stack):
    key, store = "uploads/images/original/keep.jpg", S3Store(stack.s3)
    body = photo(800, 600)
    stack.s3.put_object(Bucket=UPLOADS, Key=key, Body=body)
    resize.apply_change(store, _created(key), PROCESSED, handlers._registry())
    second = stack.s3.put_object(Bucket=UPLOADS, Key=key, Body=body)["VersionId"]
    smaller = load_registry(PipelineConfig.from_dict({"disabled_variations": ["xsmall"]}))
    resize.apply_change(store, _created(key), PROCESSED, smaller, scope=resize.Scope(prune=False))
    manifest = stack.manifest("keep.jpg")
    assert manifest["source"]["version_id"] == second
    assert "xsmall" in manifest["variations"] and "uploads/images/xsmall/keep.jpg" in stack.keys(PROCESSED)


def test_a_removal_under_a_ready_manifest_costs_a_head_of_the_original(stack):
    key, store, registry = "uploads/images/original/gone.jpg", S3Store(stack.s3), handlers._registry()
    stack.s3.put_object(Bucket=UPLOADS, Key=key, Body=photo(800, 600))
    resize.apply_change(store, _created(key), PROCESSED, registry)
    stack.s3.delete_object(Bucket=UPLOADS, Key=key)
    sent = _requests(stack.s3)
    removal = ObjectChange("removed", "ObjectRemoved:Delete", UPLOADS, key)
    assert resize.apply_change(store, removal, PROCESSED, registry).outcome == "removed"
    assert [request for request in sent if request[1] == key] == [("HeadObject", key)]


def test_a_file_missing_when_the_event_comes_again_is_rendered_from_the_one_read_of_the_original(stack):
    key = "uploads/images/original/again.jpg"
    stack.s3.put_object(Bucket=UPLOADS, Key=key, Body=photo(800, 600))
    (event,) = stack.deliveries()
    handlers.resize_handler(event, None)
    stored = stack.keys(PROCESSED)
    stack.s3.delete_object(Bucket=PROCESSED, Key="uploads/images/small/again.jpg")
    sent = _requests(handlers.s3_client())
    assert handlers.resize_handler(event, None)["results"][0]["outcome"] == "processed"
    assert sorted(stack.keys(PROCESSED)) == sorted(stored)
    assert [request for request in sent if request[1] == key] == [("GetObject", key)], "read once, with the manifest"


def test_the_same_bytes_uploaded_again_cost_one_manifest_and_no_rendering(stack):
    key = "uploads/images/original/same.jpg"
    body = photo(800, 600)
    stack.s3.put_object(Bucket=UPLOADS, Key=key, Body=body)
    deliver(stack)
    before = stack.manifest("same.jpg")
    second = stack.s3.put_object(Bucket=UPLOADS, Key=key, Body=body)["VersionId"]
    (event,) = stack.deliveries()
    sent = _requests(handlers.s3_client())
    assert handlers.resize_handler(event, None)["results"][0]["outcome"] == "processed"
    assert [op for op, _ in sent if op == "PutObject"] == ["PutObject"], "the manifest alone"
    after = stack.manifest("same.jpg")
    assert after["source"]["version_id"] == second != before["source"]["version_id"]
    assert after["source"]["sequencer"] == event_sequencer(event)
    assert after["variations"] == before["variations"], "the same files, the same versioned URLs"


def test_a_removal_records_its_sequencer_and_a_second_delivery_finds_it_done(stack):
    key = "uploads/images/original/twice.jpg"
    stack.s3.put_object(Bucket=UPLOADS, Key=key, Body=photo(800, 600))
    deliver(stack)
    stack.s3.delete_object(Bucket=UPLOADS, Key=key)
    (event,) = stack.deliveries()
    assert handlers.resize_handler(event, None)["results"] == [{"key": key, "outcome": "removed", "reason": None}]
    assert stack.manifest("twice.jpg")["source"]["sequencer"] == event_sequencer(event)
    assert handlers.resize_handler(event, None)["results"] == [
        {"key": key, "outcome": "skipped", "reason": "already removed"}]


def event_sequencer(delivery: dict) -> str:
    (record,) = json.loads(delivery["Records"][0]["Sns"]["Message"])["Records"]
    return record["s3"]["object"]["sequencer"]


def test_a_replacement_over_the_byte_limit_takes_the_place_of_the_version_it_replaces(stack, monkeypatch):
    monkeypatch.setenv("PIPELINE_CONFIG", json.dumps({"max_bytes": 500_000}))
    key = "uploads/images/original/grew.jpg"
    stack.s3.put_object(Bucket=UPLOADS, Key=key, Body=photo(800, 600))
    deliver(stack)
    assert stack.manifest("grew.jpg")["status"] == "ready"
    stack.s3.put_object(Bucket=UPLOADS, Key=key, Body=photo(2400, 1800, seed=3))  # over the limit
    (event,) = stack.deliveries()
    assert handlers.resize_handler(event, None)["results"][0]["outcome"] == "failed"
    manifest = stack.manifest("grew.jpg")
    assert manifest["status"] == "failed" and manifest["source"]["etag"] == head_etag(stack, UPLOADS, key)
    assert manifest["source"]["sequencer"] == event_sequencer(event) and manifest["source"]["bytes"] > 500_000
    assert [k for k in stack.keys(PROCESSED) if "/manifest/" not in k] == []  # the old version's files went


def test_a_corrupt_upload_delivered_again_is_not_rendered_again(stack):
    """Its failed manifest says why, under the same limits: the second delivery reports that, and
    writes nothing."""
    key = "uploads/images/original/broken.jpg"
    stack.s3.put_object(Bucket=UPLOADS, Key=key, Body=b"\xff\xd8\xff\xe0 not really a JPEG")
    (event,) = stack.deliveries()
    (first,) = handlers.resize_handler(event, None)["results"]
    assert first["outcome"] == "failed" and first["reason"]
    written = stack.s3.head_object(Bucket=PROCESSED, Key="uploads/images/manifest/broken.jpg.json")["ETag"]
    assert handlers.resize_handler(event, None)["results"] == [{"key": key, "outcome": "skipped", "reason": first["reason"]}]
    assert stack.s3.head_object(Bucket=PROCESSED, Key="uploads/images/manifest/broken.jpg.json")["ETag"] == written


def test_files_put_before_a_plugin_rejects_the_upload_are_deleted(stack, monkeypatch):
    """A new upload's files go out while it renders; a plugin's RejectedImage on a later variation
    makes it a failed upload, whose manifest lists no file: the files already put must go too."""
    from pipeline import imaging

    real = imaging._encoded

    def encoded(registry, encoder, image):
        if image.size == (150, 150):  # square_small, the last one made
            raise imaging.RejectedImage("the moderation plugin refuses this photo")
        return real(registry, encoder, image)

    monkeypatch.setattr(imaging, "_encoded", encoded)
    stack.s3.put_object(Bucket=UPLOADS, Key="uploads/images/original/r.jpg", Body=photo(1600, 1200))
    deliver(stack)
    manifest = stack.manifest("r.jpg")
    assert manifest["status"] == "failed" and "moderation" in manifest["reason"]
    assert [k for k in stack.keys(PROCESSED) if "/manifest/" not in k] == []
