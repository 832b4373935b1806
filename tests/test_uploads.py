"""Presigned uploads: a browser's POST lands at its key, and the policy holds what it must not change.

What moto (5.2) enforces of a POST policy: nothing. It checks neither the signature nor the
expiry, nor any condition (key, content-length-range, Content-Type): it stores whatever the form
says, at whatever key the form names (it does fill in `${filename}`). So acceptance is tested by
POSTing to a moto server, and every refusal on the policy document the function produced, read
from the form's own `policy` field and evaluated the way S3 documents it
(https://docs.aws.amazon.com/AmazonS3/latest/API/sigv4-HTTPPOSTConstructPolicy.html).
"""

from __future__ import annotations

import base64
import json
import os
import re
from datetime import datetime, timedelta, timezone

import boto3
import pytest
import requests

from aws import REGION, UPLOADS
from conftest import run_cli
from pipeline import samples, uploads

PREFIX = "uploads/images/original/"
# Form fields S3 does not match against the policy's conditions.
UNCHECKED_FIELDS = {"policy", "x-amz-signature", "file"}


@pytest.fixture(scope="module")
def signer(moto_server_url):
    """A signing client as an app's backend makes one, its AWS being the moto server (for the
    processes these tests start too)."""
    with pytest.MonkeyPatch.context() as patch:
        for name, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                            "AWS_DEFAULT_REGION": REGION, "AWS_ENDPOINT_URL": moto_server_url}.items():
            patch.setenv(name, value)
        yield uploads.signing_client()


@pytest.fixture
def s3(signer, moto_server):
    """The signing client, with an empty uploads bucket on the moto server."""
    signer.create_bucket(Bucket=UPLOADS, CreateBucketConfiguration={"LocationConstraint": REGION})
    return signer


def post(upload: uploads.PresignedUpload, data: bytes, *, filename: str = "photo.jpg", **changed: str):
    """What a browser sends: the fields (some perhaps changed), then the file."""
    fields = {**upload.fields, **changed}
    return requests.post(upload.url, data=fields, files={"file": (filename, data, fields["Content-Type"])},
                         timeout=30)


def policy_of(upload: uploads.PresignedUpload) -> dict:
    return json.loads(base64.b64decode(upload.fields["policy"]))


def s3_refuses(upload: uploads.PresignedUpload, size: int, *, at: datetime | None = None, **changed: str) -> str | None:
    """Why S3 refuses the form (the upload's fields, some changed, and a file of `size` bytes),
    or None: every condition holds, every field has a condition, the policy has not expired."""
    policy = policy_of(upload)
    form = {name.lower(): value for name, value in {**upload.fields, **changed}.items()}
    form["bucket"] = UPLOADS  # from the URL, not a field; the policy names it like one
    expiration = datetime.strptime(policy["expiration"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc)
    if (at or datetime.now(timezone.utc)) > expiration:
        return "policy expired"
    checked = set()
    for condition in policy["conditions"]:
        if isinstance(condition, dict):
            ((name, value),) = condition.items()
            condition = ["eq", "$" + name, value]
        operator, *arguments = condition
        if operator == "content-length-range":
            low, high = arguments
            if not low <= size <= high:
                return f"size {size} outside {low}..{high}"
            continue
        name, value = arguments[0].lstrip("$").lower(), arguments[1]
        checked.add(name)
        actual = form.get(name, "")
        if operator == "eq" and actual != value or operator == "starts-with" and not actual.startswith(value):
            return f"{name} {actual!r} fails {operator} {value!r}"
    extra = set(form) - checked - UNCHECKED_FIELDS - {"bucket"}
    return f"extra input fields {sorted(extra)}" if extra else None


def test_a_jpeg_under_the_limit_is_accepted_and_lands_at_its_key(s3):
    photo = samples.jpeg_bytes(samples.photo(640, 480, grain=0))
    upload = uploads.presigned_upload(s3, UPLOADS, "2026/IMG 0042.jpg", max_bytes=len(photo))
    response = post(upload, photo)
    assert response.status_code == 204, response.text
    stored = s3.get_object(Bucket=UPLOADS, Key=PREFIX + "2026/IMG 0042.jpg")
    assert stored["Body"].read() == photo and stored["ContentType"] == "image/jpeg"
    assert s3_refuses(upload, len(photo)) is None, "S3 would accept the form as sent"


def test_a_per_user_prefix_takes_the_browsers_file_name(s3):
    photo = samples.jpeg_bytes(samples.photo(320, 240, grain=0))
    upload = uploads.presigned_upload(s3, UPLOADS, "user-42/", prefix_only=True, content_type="image/jpeg")
    assert upload.fields["key"] == PREFIX + "user-42/${filename}"
    assert post(upload, photo, filename="beach.jpg").status_code == 204
    assert s3.head_object(Bucket=UPLOADS, Key=PREFIX + "user-42/beach.jpg")["ContentLength"] == len(photo)
    assert s3_refuses(upload, len(photo), key=PREFIX + "user-42/beach.jpg") is None


def test_moto_enforces_none_of_the_policy(s3):
    """Why the refusals below are read from the policy: moto stores a form that breaks every
    condition. Should this fail, moto has started to enforce them: POST the refusals instead."""
    upload = uploads.presigned_upload(s3, UPLOADS, "photo.jpg", max_bytes=10, expires_in=1)
    response = post(upload, b"<html>" * 10, **{"Content-Type": "text/html", "key": "elsewhere.html"})
    assert response.status_code == 204
    assert s3.head_object(Bucket=UPLOADS, Key="elsewhere.html")["ContentType"] == "text/html"


def test_the_policy_holds_exactly_the_conditions_of_the_upload(s3):
    upload = uploads.presigned_upload(s3, UPLOADS, "a/b.heic", max_bytes=1000, expires_in=120)
    conditions = policy_of(upload)["conditions"]
    assert {"Content-Type": "image/heic"} in conditions and upload.fields["Content-Type"] == "image/heic"
    assert ["content-length-range", 1, 1000] in conditions
    assert {"key": PREFIX + "a/b.heic"} in conditions and {"bucket": UPLOADS} in conditions
    assert not [c for c in conditions if isinstance(c, list) and c[0] == "starts-with"], "an exact key, no prefix"
    expiration = datetime.strptime(upload.expires_at, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc)
    assert timedelta(seconds=110) < expiration - datetime.now(timezone.utc) <= timedelta(seconds=120)
    assert upload.fields["x-amz-algorithm"] == "AWS4-HMAC-SHA256"


def test_over_the_limit_is_refused(s3):
    """moto stores any size: the policy's content-length-range is what S3 refuses it by."""
    upload = uploads.presigned_upload(s3, UPLOADS, "big.jpg", max_bytes=5000)
    assert s3_refuses(upload, 5000) is None
    assert s3_refuses(upload, 5001) == "size 5001 outside 1..5000"
    assert s3_refuses(upload, 0) == "size 0 outside 1..5000"


def test_the_size_limit_is_the_pipeline_configurations(s3):
    default = uploads.presigned_upload(s3, UPLOADS, "a.jpg")
    assert ["content-length-range", 1, 50 * 1024 * 1024] in policy_of(default)["conditions"]


@pytest.mark.parametrize("content_type", ["text/html", "image/svg+xml", "application/octet-stream", "image/png"])
def test_another_content_type_than_the_signed_one_is_refused(s3, content_type):
    """moto stores any Content-Type: the policy's exact Content-Type is what S3 refuses it by.
    Even another image type is refused: the upload was signed for one."""
    upload = uploads.presigned_upload(s3, UPLOADS, "photo.jpg")
    assert s3_refuses(upload, 100, **{"Content-Type": content_type}) == \
        f"content-type {content_type!r} fails eq 'image/jpeg'"


def test_a_form_without_its_content_type_is_refused(s3):
    upload = uploads.presigned_upload(s3, UPLOADS, "photo.jpg")
    fields = dict(upload.fields)
    del fields["Content-Type"]
    stripped = uploads.PresignedUpload(upload.url, fields, upload.key, upload.content_type, upload.max_bytes,
                                       upload.expires_at)
    assert s3_refuses(stripped, 100) == "content-type '' fails eq 'image/jpeg'"


@pytest.mark.parametrize("key", [PREFIX + "other.jpg", PREFIX + "photo.jpg.html", "uploads/images/large/photo.jpg",
                                 "photo.jpg", PREFIX])
def test_a_key_other_than_the_signed_one_is_refused(s3, key):
    """moto stores at any key the form names: the policy's exact key is what S3 refuses it by."""
    upload = uploads.presigned_upload(s3, UPLOADS, "photo.jpg")
    assert s3_refuses(upload, 100, key=key) == f"key {key!r} fails eq {PREFIX + 'photo.jpg'!r}"


@pytest.mark.parametrize("key", [PREFIX + "user-43/x.jpg", PREFIX + "user-4/x.jpg", PREFIX + "user-42x.jpg",
                                 "uploads/images/large/user-42/x.jpg", PREFIX + "x.jpg"])
def test_a_key_outside_the_signed_prefix_is_refused(s3, key):
    """moto stores at any key the form names: the policy's starts-with is what S3 refuses it by."""
    upload = uploads.presigned_upload(s3, UPLOADS, "user-42", prefix_only=True, content_type="image/png")
    assert s3_refuses(upload, 100, key=PREFIX + "user-42/any/depth.png") is None
    assert s3_refuses(upload, 100, key=key) == f"key {key!r} fails starts-with {PREFIX + 'user-42/'!r}"


def test_an_expired_policy_is_refused(s3):
    """moto accepts an expired policy: the policy's expiration is what S3 refuses it by."""
    upload = uploads.presigned_upload(s3, UPLOADS, "photo.jpg", expires_in=600)
    assert s3_refuses(upload, 100, at=datetime.now(timezone.utc) + timedelta(seconds=590)) is None
    assert s3_refuses(upload, 100, at=datetime.now(timezone.utc) + timedelta(seconds=601)) == "policy expired"


@pytest.mark.parametrize("path, message", [
    ("", "empty"),
    ("/photo.jpg", "starts with '/'"),
    ("../photo.jpg", "'..' segment"),
    ("a/../../photo.jpg", "'..' segment"),
    ("a/./photo.jpg", "'.' or '..' segment"),
    ("a//photo.jpg", "empty, '.' or '..' segment"),
    ("a/", "empty, '.' or '..' segment"),
    ("uploads/images/original/photo.jpg", "is a key: give the path below"),
    ("a\nb.jpg", "control character"),
    ("photo.tiff", "cannot tell the content type from the extension .tiff"),
    ("photo", "cannot tell the content type from the extension (none)"),
    ("x" * 1020 + ".jpg", "longer than S3's 1024 bytes"),
])
def test_bad_paths_are_refused_before_signing(signer, path, message):
    with pytest.raises(uploads.UploadError, match=re.escape(message)):
        uploads.presigned_upload(signer, UPLOADS, path)


@pytest.mark.parametrize("options, message", [
    ({"content_type": "image/svg+xml"}, "content type 'image/svg+xml' is not accepted"),
    ({"content_type": "image/*"}, "is not accepted"),
    ({"expires_in": 0}, "expiry must be 1 to 3600 seconds"),
    ({"expires_in": 3601}, "expiry must be 1 to 3600 seconds"),
    ({"max_bytes": 0}, "max_bytes must be a positive whole number"),
])
def test_bad_options_are_refused_before_signing(signer, options, message):
    with pytest.raises(uploads.UploadError, match=re.escape(message)):
        uploads.presigned_upload(signer, UPLOADS, "photo.jpg", **options)


def test_a_prefix_needs_a_content_type(signer):
    with pytest.raises(uploads.UploadError, match="a prefix has no extension"):
        uploads.presigned_upload(signer, UPLOADS, "user-42", prefix_only=True)
    for path in ("../user-42", "/user-42", "user-42/../x", "/"):
        with pytest.raises(uploads.UploadError):
            uploads.presigned_upload(signer, UPLOADS, path, prefix_only=True, content_type="image/jpeg")


def test_a_client_that_signs_with_signature_version_2_is_refused(signer):
    """boto3 presigns with SigV2 in regions that still allow it, which buckets made since 2020
    refuse (`signer` for its credentials in the environment)."""
    legacy = boto3.client("s3", region_name="eu-west-1", endpoint_url=None)
    with pytest.raises(uploads.UploadError, match="Signature Version 2"):
        uploads.presigned_upload(legacy, UPLOADS, "photo.jpg")


def test_sign_prints_a_form_a_browser_uploads_with(s3, moto_server, tmp_path):
    env = {**os.environ, "UPLOADS_BUCKET": UPLOADS, "PIPELINE_CONFIG": json.dumps({"max_bytes": 100_000})}
    signed = run_cli("sign", "2026/from cli.png", "--json", env=env)
    assert signed.returncode == 0, signed.stderr
    form = json.loads(signed.stdout)
    assert form["key"] == PREFIX + "2026/from cli.png" and form["content_type"] == "image/png"
    assert form["max_bytes"] == 100_000 and form["url"].startswith(moto_server)
    upload = uploads.PresignedUpload(**form)
    assert s3_refuses(upload, 100_001) == "size 100001 outside 1..100000"
    png = samples.transparent_png(200, 100)
    assert post(upload, png, filename="from cli.png").status_code == 204
    assert s3.get_object(Bucket=UPLOADS, Key=PREFIX + "2026/from cli.png")["Body"].read() == png

    text = run_cli("sign", "user-7", "--prefix-only", "--content-type", "image/avif", "--expires", "60",
                   "--bucket", "other-bucket", env=env)
    assert text.returncode == 0, text.stderr
    assert f"key {PREFIX}user-7/${{filename}}, image/avif, 1 to 100,000 bytes, until " in text.stdout
    assert "  Content-Type: image/avif" in text.stdout and "other-bucket" in text.stdout


@pytest.mark.parametrize("arguments, message", [
    (["photo.jpg", "--expires", "7200"], "error: expiry must be 1 to 3600 seconds, not 7200"),
    (["../photo.jpg"], "error: '../photo.jpg' has an empty, '.' or '..' segment"),
    (["photo.bmp"], "error: 'photo.bmp': cannot tell the content type"),
])
def test_sign_refuses_bad_input_with_one_line(signer, arguments, message):
    result = run_cli("sign", *arguments, env={**os.environ, "UPLOADS_BUCKET": UPLOADS})
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.startswith(message) and len(result.stderr.splitlines()) == 1


def test_sign_needs_a_bucket_and_credentials(tmp_path):
    env = {name: value for name, value in os.environ.items()
           if not name.startswith("AWS_") and name != "UPLOADS_BUCKET"}
    env |= {"HOME": str(tmp_path), "AWS_CONFIG_FILE": str(tmp_path / "none"),
            "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none"), "AWS_EC2_METADATA_DISABLED": "true"}
    no_bucket = run_cli("sign", "photo.jpg", env=env)
    assert (no_bucket.returncode, no_bucket.stderr) == (2, "error: no bucket: give --bucket or set UPLOADS_BUCKET\n")
    no_credentials = run_cli("sign", "photo.jpg", "--bucket", UPLOADS, env=env)
    assert no_credentials.returncode == 2 and no_credentials.stderr.startswith("error: no AWS credentials to sign with")
