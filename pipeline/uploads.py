"""Presigned uploads: how a browser puts an original into the uploads bucket without credentials.

An app's backend signs one upload with `presigned_upload(s3, bucket, path, ...)` and hands the
browser the result's `url` and `fields`; the browser POSTs a multipart form with every field,
then the file last, and S3 answers 204. S3 checks the signed policy, so a browser cannot get
around these conditions by editing the form:

- the key: exactly `uploads/images/original/<path>`, or with `prefix_only` any key under
  `uploads/images/original/<path>/` (the form's key is then `...<path>/${filename}`: S3 puts the
  browser's file name there, and a browser may send any other key under the prefix);
- the size: 1 byte up to `max_bytes` (the pipeline configuration's, 50 MiB by default), so
  nothing the resize function would refuse for its size is ever stored;
- the content type: exactly one of ACCEPTED_CONTENT_TYPES, chosen by the caller (by default
  from the path's extension). A policy can only compare a field with one value or a prefix, and
  `starts-with image/` would let `image/svg+xml` (a script carrier) through, so each upload is
  signed for one type;
- the time: the policy expires after `expires_in` seconds (10 minutes by default, at most an hour).

    s3 = signing_client()
    upload = presigned_upload(s3, "photos-uploads", "2026/IMG_0042.heic")
    upload.url, upload.fields  # -> the form: fields first, then the file, as `file`

Policies signed with AWS's Signature Version 2 are refused by buckets made since 2020, and boto3
still presigns with it in the regions that allow it unless told otherwise: sign with
`signing_client()` (or any client made with `Config(signature_version="s3v4")`).
`image-pipeline sign PATH` prints the same from the command line.
"""

from __future__ import annotations

import base64
import json
import posixpath
from dataclasses import asdict, dataclass
from typing import Any

from pipeline import keys
from pipeline.caching import ORIGINAL_IMAGE_TYPES as ACCEPTED_CONTENT_TYPES  # what the CDN serves as an image
from pipeline.config import DEFAULT_MAX_BYTES

CONTENT_TYPE_OF_EXTENSION = {"jpg": "image/jpeg", "jpeg": "image/jpeg", "png": "image/png", "webp": "image/webp",
                             "gif": "image/gif", "heic": "image/heic", "heif": "image/heif", "avif": "image/avif"}
DEFAULT_EXPIRES_IN = 10 * 60
MAX_EXPIRES_IN = 60 * 60
MAX_KEY_BYTES = 1024  # S3's limit on a key, in UTF-8


class UploadError(ValueError):
    """The upload cannot be signed as asked; the message says which input and why."""


@dataclass(frozen=True)
class PresignedUpload:
    url: str
    fields: dict[str, str]  # every field of the form, in order; the file goes after them, as `file`
    key: str  # the exact key, or `<prefix>${filename}` with prefix_only
    content_type: str
    max_bytes: int
    expires_at: str  # the policy's own expiration, UTC, as "2026-06-01T12:10:00Z"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def signing_client(**client_options: Any):
    """An S3 client that signs with Signature Version 4 (region, credentials and AWS_ENDPOINT_URL
    as boto3 finds them); no credentials to sign with is an UploadError."""
    import boto3
    from botocore.config import Config

    session = boto3.session.Session()
    if session.get_credentials() is None:
        raise UploadError("no AWS credentials to sign with: run `aws configure`, or set AWS_ACCESS_KEY_ID and "
                          "AWS_SECRET_ACCESS_KEY (or AWS_PROFILE)")
    return session.client("s3", config=Config(signature_version="s3v4"), **client_options)


def presigned_upload(s3, bucket: str, path: str, *, content_type: str | None = None, prefix_only: bool = False,
                     max_bytes: int = DEFAULT_MAX_BYTES, expires_in: int = DEFAULT_EXPIRES_IN) -> PresignedUpload:
    """A presigned POST for the original at `uploads/images/original/<path>`, or with `prefix_only`
    for any original under `uploads/images/original/<path>/`; see the module's docstring."""
    check_path(path.rstrip("/") if prefix_only else path)
    if prefix_only:
        prefix = keys.original_key(path.rstrip("/") + "/")
        key = prefix + "${filename}"
        if content_type is None:
            raise UploadError("a prefix has no extension to tell the content type: give one "
                              f"({', '.join(ACCEPTED_CONTENT_TYPES)})")
    else:
        key = keys.original_key(path)
        if content_type is None:
            extension = posixpath.splitext(path)[1].lstrip(".").lower()
            content_type = CONTENT_TYPE_OF_EXTENSION.get(extension)
            if content_type is None:
                raise UploadError(f"{path!r}: cannot tell the content type from the extension "
                                  f"{'.' + extension if extension else '(none)'}; give one "
                                  f"({', '.join(ACCEPTED_CONTENT_TYPES)})")
    if len(key.encode()) > MAX_KEY_BYTES:
        raise UploadError(f"{path!r} makes a key longer than S3's {MAX_KEY_BYTES} bytes")
    if content_type not in ACCEPTED_CONTENT_TYPES:
        raise UploadError(f"content type {content_type!r} is not accepted; one of {', '.join(ACCEPTED_CONTENT_TYPES)}")
    if not isinstance(max_bytes, int) or isinstance(max_bytes, bool) or max_bytes < 1:
        raise UploadError(f"max_bytes must be a positive whole number, not {max_bytes!r}")
    if not isinstance(expires_in, int) or isinstance(expires_in, bool) or not 1 <= expires_in <= MAX_EXPIRES_IN:
        raise UploadError(f"expiry must be 1 to {MAX_EXPIRES_IN} seconds, not {expires_in!r}")

    # boto3 adds the bucket and the key ({"key": ...}, or starts-with for a key ending in ${filename});
    # every other field of the form needs its own condition, or S3 refuses the form.
    post = s3.generate_presigned_post(
        Bucket=bucket, Key=key, Fields={"Content-Type": content_type},
        Conditions=[{"Content-Type": content_type}, ["content-length-range", 1, max_bytes]],
        ExpiresIn=expires_in)
    if "x-amz-signature" not in post["fields"]:
        raise UploadError("the client signed with Signature Version 2, which buckets made since 2020 refuse; "
                          "sign with pipeline.uploads.signing_client() or Config(signature_version='s3v4')")
    policy = json.loads(base64.b64decode(post["fields"]["policy"]))
    return PresignedUpload(post["url"], dict(post["fields"]), key, content_type, max_bytes, policy["expiration"])


def check_path(path: str) -> None:
    """An original's `<path>`: relative, with no empty, `.` or `..` segment and no control character."""
    if not isinstance(path, str) or not path:
        raise UploadError("the path is empty")
    if path.startswith("/"):
        raise UploadError(f"{path!r} starts with '/': give the path below {keys.ORIGINAL_PREFIX!r}")
    if path.startswith(keys.ORIGINAL_PREFIX):
        raise UploadError(f"{path!r} is a key: give the path below {keys.ORIGINAL_PREFIX!r}")
    if any(segment in ("", ".", "..") for segment in path.split("/")):
        raise UploadError(f"{path!r} has an empty, '.' or '..' segment")
    if any(ord(character) < 32 or ord(character) == 127 for character in path):
        raise UploadError(f"{path!r} has a control character")
