"""The Lambda handlers against an in-process AWS: S3 -> SNS -> (SQS capture) -> each handler."""

from __future__ import annotations

import io
import json

import pytest
from moto import mock_aws
from PIL import Image

from aws import BACKUP, PROCESSED, UPLOADS, Stack
from pipeline import handlers, samples

DEFAULTS = ["large", "medium", "small", "xsmall", "square_medium", "square_small"]


@pytest.fixture
def stack(monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-1")
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


def test_an_upload_yields_variations_manifest_and_backup(stack):
    key = "uploads/images/original/photo.jpg"
    stack.s3.put_object(Bucket=UPLOADS, Key=key, Body=photo(), ContentType="image/jpeg",
                        Metadata={"uploaded-by": "user-42"})
    deliver(stack)
    for name in DEFAULTS:
        head = stack.s3.head_object(Bucket=PROCESSED, Key=f"uploads/images/{name}/photo.jpg")
        assert head["ContentType"] == "image/jpeg"
        assert head["CacheControl"] == "public, max-age=31536000, immutable"
        assert head["Metadata"]["source-etag"] == stack.s3.head_object(Bucket=UPLOADS, Key=key)["ETag"].strip('"')
        assert len(head["Metadata"]["spec-hash"]) == 16
    manifest = json.loads(stack.s3.get_object(Bucket=PROCESSED, Key="uploads/images/manifest/photo.json")["Body"].read())
    assert manifest["status"] == "ready" and set(manifest["variations"]) == set(DEFAULTS)
    backup = stack.s3.head_object(Bucket=BACKUP, Key=key)
    assert backup["ContentType"] == "image/jpeg" and backup["Metadata"]["uploaded-by"] == "user-42"
    assert stack.keys(UPLOADS) == [key], "nothing may be written into the bucket that triggers the functions"


@pytest.mark.parametrize("path", ["summer trip/IMG 0042.jpg", "a+b/c+d.jpg", "2026/caf\u00e9/\u5199\u771f \u2013 1.jpg",
                                  "deep/er/and/deeper/photo.jpg"])
def test_awkward_keys_round_trip(stack, path):
    stack.s3.put_object(Bucket=UPLOADS, Key=f"uploads/images/original/{path}", Body=photo(400, 300))
    deliver(stack)
    stem = path.rsplit(".", 1)[0]
    assert stack.keys(PROCESSED) == sorted([f"uploads/images/{n}/{stem}.jpg" for n in DEFAULTS]
                                           + [f"uploads/images/manifest/{stem}.json"])
    assert stack.keys(BACKUP) == [f"uploads/images/original/{path}"]


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


def test_a_replaced_original_replaces_its_variations(stack):
    key = "uploads/images/original/photo.jpg"
    stack.s3.put_object(Bucket=UPLOADS, Key=key, Body=photo(1600, 1200, seed=1))
    deliver(stack)
    before = stack.state(PROCESSED)
    stack.s3.put_object(Bucket=UPLOADS, Key=key, Body=photo(1200, 1600, seed=2))  # now a portrait
    deliver(stack)
    after = stack.state(PROCESSED)
    assert set(after) == set(before)
    assert all(after[k][0] != before[k][0] for k in after), "every variation and the manifest changed"
    large = Image.open(io.BytesIO(stack.s3.get_object(Bucket=PROCESSED, Key="uploads/images/large/photo.jpg")["Body"].read()))
    assert large.size == (1200, 1600)
    manifest = json.loads(stack.s3.get_object(Bucket=PROCESSED, Key="uploads/images/manifest/photo.json")["Body"].read())
    assert manifest["source"]["etag"] == stack.s3.head_object(Bucket=UPLOADS, Key=key)["ETag"].strip('"')
    assert len(stack.s3.list_object_versions(Bucket=BACKUP)["Versions"]) == 2, "both versions are backed up"


def test_a_removed_original_removes_its_variations_but_not_its_backup(stack):
    key = "uploads/images/original/trip/photo.jpg"
    stack.s3.put_object(Bucket=UPLOADS, Key=key, Body=photo())
    stack.s3.put_object(Bucket=UPLOADS, Key="uploads/images/original/trip/other.jpg", Body=photo(500, 400))
    deliver(stack)
    stack.s3.delete_object(Bucket=UPLOADS, Key=key)
    deliver(stack)
    assert stack.keys(PROCESSED) == sorted([f"uploads/images/{n}/trip/other.jpg" for n in DEFAULTS]
                                           + ["uploads/images/manifest/trip/other.json"])
    assert stack.keys(BACKUP) == sorted([key, "uploads/images/original/trip/other.jpg"])


def test_a_text_file_named_jpg_gets_a_failed_manifest_and_a_backup_and_no_exception(stack):
    stack.s3.put_object(Bucket=UPLOADS, Key="uploads/images/original/notes.jpg", Body=b"shopping list: milk, eggs\n")
    ((resize, backup),) = deliver(stack)
    assert resize["results"][0]["outcome"] == "failed"
    assert stack.keys(PROCESSED) == ["uploads/images/manifest/notes.json"]
    manifest = json.loads(stack.s3.get_object(Bucket=PROCESSED, Key="uploads/images/manifest/notes.json")["Body"].read())
    assert manifest["status"] == "failed" and "not an image" in manifest["reason"]
    assert stack.keys(BACKUP) == ["uploads/images/original/notes.jpg"]


def test_an_original_over_the_byte_limit_is_refused_before_download(stack, monkeypatch):
    monkeypatch.setenv("PIPELINE_CONFIG", json.dumps({"max_bytes": 100_000}))
    stack.s3.put_object(Bucket=UPLOADS, Key="uploads/images/original/big.jpg", Body=photo(2000, 1500, seed=3))
    (event,) = stack.deliveries()
    downloads = []
    handlers.s3_client().meta.events.register("provide-client-params.s3.GetObject",
                                              lambda params, **kw: downloads.append(params["Key"]))
    result = handlers.resize_handler(event, None)
    assert result["results"][0]["outcome"] == "failed" and "over the limit" in result["results"][0]["reason"]
    assert "uploads/images/original/big.jpg" not in downloads


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
    emf = [line for line in lines if "_aws" in line]
    names = {m["Name"] for line in emf for d in line["_aws"]["CloudWatchMetrics"] for m in d["Metrics"]}
    assert {"ImagesProcessed", "ImagesFailed", "BytesWritten", "TimePerImage"} <= names
    assert all(line["_aws"]["CloudWatchMetrics"][0]["Namespace"] == "ImagePipeline" for line in emf)


def test_s3_throttling_on_put_makes_the_resize_handler_raise_after_the_sdk_retries(stack):
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
    assert "uploads/images/manifest/photo.json" not in stack.keys(PROCESSED)
    assert "uploads/images/manifest/second.json" in stack.keys(PROCESSED), "one bad record never blocks the others"


def test_an_original_replaced_while_rendering_is_retried_and_ends_with_the_new_one(stack, monkeypatch):
    from pipeline import resize

    key = "uploads/images/original/race.jpg"
    stack.s3.put_object(Bucket=UPLOADS, Key=key, Body=photo(800, 600, seed=1))
    (event,) = stack.deliveries()
    render = resize.outputs_for_original

    def render_then_replace(*args, **kwargs):
        result = render(*args, **kwargs)
        stack.s3.put_object(Bucket=UPLOADS, Key=key, Body=photo(600, 800, seed=2))  # someone uploads again
        return result

    monkeypatch.setattr(resize, "outputs_for_original", render_then_replace)
    with pytest.raises(handlers.RetryableFailure, match="replaced while it was processed"):
        handlers.resize_handler(event, None)
    assert "uploads/images/manifest/race.json" not in stack.keys(PROCESSED), "no manifest for stale variations"
    monkeypatch.setattr(resize, "outputs_for_original", render)
    handlers.resize_handler(event, None)  # Lambda's retry
    manifest = json.loads(stack.s3.get_object(Bucket=PROCESSED, Key="uploads/images/manifest/race.json")["Body"].read())
    assert manifest["source"]["etag"] == stack.s3.head_object(Bucket=UPLOADS, Key=key)["ETag"].strip('"')
    assert (manifest["variations"]["large"]["width"], manifest["variations"]["large"]["height"]) == (600, 800)


def test_an_original_deleted_before_processing_is_not_an_error(stack):
    key = "uploads/images/original/gone.jpg"
    stack.s3.put_object(Bucket=UPLOADS, Key=key, Body=photo(400, 300))
    stack.s3.delete_object(Bucket=UPLOADS, Key=key)
    created, removed = stack.deliveries()
    assert [r["outcome"] for r in handlers.resize_handler(created, None)["results"]] == ["gone"]
    assert [r["outcome"] for r in handlers.backup_handler(created, None)["results"]] == ["gone"]
    handlers.resize_handler(removed, None)
    assert stack.keys(PROCESSED) == [] and stack.keys(BACKUP) == []
