"""The local stack end to end: a browser's presigned POST in, variations out through the local CDN
over HTTP, the backup, a replacement and a deletion; and the parts the stack is made of."""

from __future__ import annotations

import io
import json
from urllib.parse import quote

import pytest
import requests
from PIL import Image

from pipeline import keys, samples, uploads
from pipeline.caching import CONTENT_SECURITY_POLICY, VARIATION_CACHE, VERSIONED_CACHE
from pipeline.local.topology import LocalStack

VARIATIONS = {"large", "medium", "small", "xsmall", "square_medium", "square_small"}
SECURITY = {"x-content-type-options": "nosniff", "content-security-policy": CONTENT_SECURITY_POLICY,
            "x-frame-options": "DENY", "strict-transport-security": "max-age=63072000; includeSubDomains",
            "referrer-policy": "strict-origin-when-cross-origin"}


@pytest.fixture(scope="module")
def stack():
    with LocalStack(retry_delays=(0.05, 0.1)) as running:
        yield running


def post(upload: uploads.PresignedUpload, data: bytes) -> requests.Response:
    """What a browser sends: every field of the form, then the file."""
    return requests.post(upload.url, data=upload.fields, files={"file": ("photo", data, upload.content_type)},
                         timeout=30)


def signer(stack: LocalStack):
    return uploads.signing_client(endpoint_url=stack.s3_url, region_name="eu-west-1")


def current_version(stack: LocalStack, path: str) -> str:
    return stack.client("s3").head_object(Bucket=stack.buckets["uploads"], Key=keys.original_key(path))["VersionId"]


def cdn(stack: LocalStack, url_path: str, **headers: str) -> requests.Response:
    return requests.get(stack.cdn_url + url_path, headers=headers, timeout=30)


def assert_security_headers(response: requests.Response) -> None:
    for name, value in SECURITY.items():
        assert response.headers.get(name) == value, (name, response.url)


def test_an_upload_through_the_whole_stack(stack):
    """Presigned POST (names with spaces and non-ASCII) -> variations, original, manifest and
    backup through the CDN; a replacement's new bytes at its manifest URL; a deletion's 404s."""
    s3, signing = stack.client("s3"), signer(stack)
    photos = {"2026/summer trip/IMG 0042 – café+1.jpg": samples.jpeg_bytes(samples.photo(1600, 1200, seed=3)),
              "ünïcødé/logo ✓.png": samples.transparent_png(800, 600)}
    for path, data in photos.items():
        assert post(uploads.presigned_upload(signing, stack.buckets["uploads"], path), data).status_code == 204
    manifests = {path: stack.wait_for_manifest(path, version_id=current_version(stack, path)) for path in photos}

    for path, data in photos.items():
        manifest = manifests[path]
        assert manifest["status"] == "ready" and set(manifest["variations"]) == VARIATIONS
        for name, entry in manifest["variations"].items():
            response = cdn(stack, entry["url"])  # the versioned URL, as the manifest lists it
            assert response.status_code == 200, (name, response.status_code)
            assert response.headers["content-type"] == entry["content_type"] == "image/jpeg"
            assert response.headers["cache-control"] == VERSIONED_CACHE
            assert_security_headers(response)
            assert len(response.content) == entry["bytes"] == int(response.headers["content-length"])
            with Image.open(io.BytesIO(response.content)) as image:
                assert image.size == (entry["width"], entry["height"])
            rule = cdn(stack, "/" + quote(keys.variation_key(name, path)))  # the URL rule: no v
            assert rule.status_code == 200 and rule.content == response.content
            assert rule.headers["cache-control"] == VARIATION_CACHE
        original = cdn(stack, "/" + quote(keys.original_key(path)))
        assert original.status_code == 200 and original.content == data
        assert original.headers["content-type"] == ("image/png" if path.endswith(".png") else "image/jpeg")
        assert original.headers["cache-control"] == VARIATION_CACHE and "content-disposition" not in original.headers
        assert original.headers["x-amz-version-id"] == manifest["source"]["version_id"]
        assert_security_headers(original)
        served = cdn(stack, "/" + quote(keys.manifest_key(path)))
        assert served.status_code == 200 and served.headers["content-type"] == "application/json"
        assert served.headers["cache-control"] == "public, max-age=60" and served.json()["status"] == "ready"
        stack.wait_idle(30)
        backed_up = s3.list_object_versions(Bucket=stack.buckets["backup"], Prefix=keys.original_key(path))
        (copy,) = [v for v in backed_up["Versions"] if v["Key"] == keys.original_key(path)]
        head = s3.head_object(Bucket=stack.buckets["backup"], Key=copy["Key"], VersionId=copy["VersionId"])
        assert head["Metadata"]["source-version-id"] == manifest["source"]["version_id"]
        assert s3.get_object(Bucket=stack.buckets["backup"], Key=copy["Key"])["Body"].read() == data

    # Replaced: new bytes at the new manifest's URL, and the old version stays in the backup.
    path = "2026/summer trip/IMG 0042 – café+1.jpg"
    before = manifests[path]
    replacement = samples.jpeg_bytes(samples.photo(1200, 1600, seed=9))
    assert post(uploads.presigned_upload(signing, stack.buckets["uploads"], path), replacement).status_code == 204
    after = stack.wait_for_manifest(path, version_id=current_version(stack, path))
    assert after["source"]["version_id"] != before["source"]["version_id"]
    for name, entry in after["variations"].items():
        assert entry["url"] != before["variations"][name]["url"], "a new source gets a new v"
        response = cdn(stack, entry["url"])
        assert response.status_code == 200 and len(response.content) == entry["bytes"]
        with Image.open(io.BytesIO(response.content)) as image:
            assert image.size == (entry["width"], entry["height"])
    assert (after["variations"]["large"]["width"], after["variations"]["large"]["height"]) == (1200, 1600)
    assert cdn(stack, "/" + quote(keys.original_key(path))).content == replacement
    stack.wait_idle(30)
    assert stack_backups(stack, path) == {before["source"]["version_id"], after["source"]["version_id"]}

    # Deleted: the variations and the original are gone from the CDN; the tombstone is served.
    s3.delete_object(Bucket=stack.buckets["uploads"], Key=keys.original_key(path))
    tombstone = stack.wait_for_manifest(path, deleted=True)
    assert tombstone["variations"] == {}
    for entry in after["variations"].values():
        gone = cdn(stack, entry["url"])
        assert gone.status_code == 404 and gone.headers["content-type"] == "application/xml"
        assert_not_found(gone, entry["key"])  # S3's answer to a distribution that may list the bucket
        assert_security_headers(gone)
        assert cdn(stack, "/" + quote(entry["key"])).status_code == 404
    assert_not_found(cdn(stack, "/" + quote(keys.original_key(path))), keys.original_key(path))
    served = cdn(stack, "/" + quote(keys.manifest_key(path)))
    assert served.status_code == 200 and served.json()["status"] == "deleted"
    stack.wait_idle(30)
    assert stack_backups(stack, path) == {before["source"]["version_id"], after["source"]["version_id"]}
    assert stack.runner.dead_letters == []


def stack_backups(stack: LocalStack, path: str) -> set[str]:
    from pipeline.storage import S3Store

    return S3Store(stack.client("s3")).backed_up_versions(stack.buckets["backup"], keys.original_key(path))


def assert_not_found(response: requests.Response, key: str) -> None:
    """S3's NoSuchKey, as the distribution passes it on."""
    assert response.status_code == 404, (response.url, response.status_code)
    assert response.headers["content-type"] == "application/xml"
    assert b"<Code>NoSuchKey</Code>" in response.content
    assert f"<Key>{key}</Key>".encode() in response.content


def test_not_yet_there_answers_404_and_an_html_original_is_a_download(stack):
    s3 = stack.client("s3")
    for key in ("uploads/images/large/never-uploaded.jpg", keys.manifest_key("never-uploaded.jpg"),
                keys.original_key("never-uploaded.jpg")):
        assert_not_found(cdn(stack, "/" + key), key)
        assert requests.head(stack.cdn_url + "/" + key, timeout=30).status_code == 404
    html = b"<html><script>alert(1)</script></html>"
    s3.put_object(Bucket=stack.buckets["uploads"], Key=keys.original_key("avatar.jpg"), Body=html,
                  ContentType="text/html")
    manifest = stack.wait_for_manifest("avatar.jpg")
    assert manifest["status"] == "failed" and manifest["variations"] == {}
    served = cdn(stack, "/" + keys.original_key("avatar.jpg"))
    assert served.status_code == 200 and served.content == html
    assert served.headers["content-type"] == "application/octet-stream"
    assert served.headers["content-disposition"] == "attachment"
    # Dot segments are resolved before routing: this is the processed bucket's manifest, not an original.
    dotted = cdn(stack, "/uploads/images/original/../manifest/avatar.jpg.json")
    assert dotted.status_code == 200 and dotted.json()["status"] == "failed"
    assert requests.post(stack.cdn_url + "/uploads/images/original/x.jpg", data=b"x", timeout=30).status_code == 403


@pytest.mark.parametrize("url_path", [
    "/", "/?list-type=2", "/?prefix=uploads/images/&delimiter=/", "/?versions", "/?v=1",
    "/index.html", "/uploads/", "/uploads/images", "/uploads/images/..", "/uploads/images/large/../../..",
    "/Uploads/images/large/a.jpg",
])
def test_a_path_outside_the_images_answers_404_and_lists_nothing(stack, url_path):
    """As the default behaviour's function answers it, before any bucket is asked: no body at all,
    so no key of either bucket, whatever the query string asks for."""
    response = cdn(stack, url_path)
    assert response.status_code == 404 and response.content == b""
    assert requests.head(stack.cdn_url + url_path, timeout=30).status_code == 404


def test_the_cdn_answers_cors_for_the_page_only(stack):
    url = "/" + keys.manifest_key("avatar.jpg")
    page_origin = stack.page_url.rstrip("/")
    allowed = cdn(stack, url, Origin=page_origin)
    assert allowed.headers["access-control-allow-origin"] == page_origin
    assert "access-control-allow-origin" not in cdn(stack, url, Origin="http://127.0.0.1:1").headers
    assert "access-control-allow-origin" not in cdn(stack, url).headers


def test_both_http_subscriptions_were_confirmed_by_the_runner(stack):
    sns = stack.client("sns")
    subscriptions = sns.list_subscriptions_by_topic(TopicArn=stack.topic_arn)["Subscriptions"]
    assert sorted((s["Protocol"], s["Endpoint"]) for s in subscriptions) == [
        ("http", stack.runner.endpoint("backup")), ("http", stack.runner.endpoint("resize"))]
    for subscription in subscriptions:
        attributes = sns.get_subscription_attributes(SubscriptionArn=subscription["SubscriptionArn"])["Attributes"]
        assert attributes["PendingConfirmation"] == "false"
    assert sorted(stack.runner.subscriptions.values()) == sorted(s["SubscriptionArn"] for s in subscriptions)


def test_the_notification_is_the_real_stacks(stack):
    configuration = stack.client("s3").get_bucket_notification_configuration(Bucket=stack.buckets["uploads"])
    (topic,) = configuration["TopicConfigurations"]
    assert topic["TopicArn"] == stack.topic_arn
    assert sorted(topic["Events"]) == ["s3:ObjectCreated:*", "s3:ObjectRemoved:*"]
    assert topic["Filter"]["Key"]["FilterRules"] == [{"Name": "Prefix", "Value": "uploads/images/original/"}] or \
        topic["Filter"]["Key"]["FilterRules"] == [{"Name": "prefix", "Value": "uploads/images/original/"}]
    versioning = stack.client("s3").get_bucket_versioning(Bucket=stack.buckets["uploads"])
    assert versioning["Status"] == "Enabled"
    # Outside the prefix: no event, so no invocation.
    attempts = len(stack.runner.attempts)
    stack.client("s3").put_object(Bucket=stack.buckets["uploads"], Key="elsewhere/photo.jpg", Body=b"x")
    stack.wait_idle(10)
    assert len(stack.runner.attempts) == attempts
