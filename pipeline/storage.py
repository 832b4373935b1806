"""Storage adapters: where the objects of `pipeline.outputs` are read and written.

`LocalDirectory` serves `python -m pipeline process`: each object becomes a file at its key.
`S3Store` is every S3 call the functions make, one method per call, given a boto3 client and
never making one, so that tests can run another event between any two of them.
"""

from __future__ import annotations

import contextlib
import os
import re
from typing import NamedTuple

from pipeline.outputs import OutputObject, parse_manifest


class LocalDirectory:
    def __init__(self, root: str | os.PathLike):
        self.root = os.fspath(root)

    def put(self, obj: OutputObject) -> str:
        import uuid

        target = os.path.join(self.root, obj.key)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        # Written beside the tree of keys (every key starts with uploads/), then renamed: a reader
        # never sees half a file, and no temporary name can be another file's key. open() gives
        # it the permissions of any new file (the umask's), which a web server serving it needs.
        scratch = os.path.join(self.root, ".partial")
        os.makedirs(scratch, exist_ok=True)
        partial = os.path.join(scratch, uuid.uuid4().hex)
        try:
            with open(partial, "xb") as file:
                file.write(obj.body)
            os.replace(partial, target)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.remove(partial)
            raise
        return target


class Original(NamedTuple):
    key: str
    etag: str  # without quotes
    version_id: str | None
    size: int
    body: bytes | None  # None when not downloaded: over the size limit, or read with a HEAD


class StoredManifest(NamedTuple):
    manifest: dict | None  # None when absent or not a manifest this version trusts
    etag: str | None  # of the stored object, trusted or not; None when there is none


class Conflict(Exception):
    """A conditional write found the object changed since it was read: someone else wrote it."""


# Manifests the pipeline writes are a few kilobytes; a bigger object there is not one of them.
MAX_MANIFEST_BYTES = 1024 * 1024
# The characters XML 1.0 can carry.
_XML_SAFE = re.compile("[\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]*")

_MISSING = ("404", "NoSuchKey", "NotFound", "NoSuchVersion")
_CONFLICT = ("PreconditionFailed", "412", "ConditionalRequestConflict", "409")


def _code(error) -> str:
    return str(error.response.get("Error", {}).get("Code", ""))


class S3Store:
    def __init__(self, client):
        self.client = client

    def _unless_missing(self, call, **arguments) -> dict | None:
        """The answer of one S3 call, or None when its object (or version) does not exist."""
        try:
            return call(**arguments)
        except self.client.exceptions.ClientError as error:
            if _code(error) in _MISSING:
                return None
            raise

    def get_original(self, bucket: str, key: str, max_bytes: int) -> Original | None:
        """The current version of an original, or None when it is gone (deleted, or a delete marker)."""
        response = self._unless_missing(self.client.get_object, Bucket=bucket, Key=key)
        if response is None:
            return None
        size = response["ContentLength"]
        if size > max_bytes:
            response["Body"].close()
            body = None
        else:
            body = response["Body"].read()
        return Original(key, response["ETag"].strip('"'), response.get("VersionId"), size, body)

    def read_manifest(self, bucket: str, key: str) -> StoredManifest:
        response = self._unless_missing(self.client.get_object, Bucket=bucket, Key=key)
        if response is None:
            return StoredManifest(None, None)
        etag = response["ETag"].strip('"')
        if response["ContentLength"] > MAX_MANIFEST_BYTES:  # not one the pipeline wrote: rewritten, never read
            response["Body"].close()
            return StoredManifest(None, etag)
        return StoredManifest(parse_manifest(response["Body"].read()), etag)

    def head_original(self, bucket: str, key: str) -> Original | None:
        """The current version of an original without its bytes, or None when it is gone."""
        head = self._unless_missing(self.client.head_object, Bucket=bucket, Key=key)
        if head is None:
            return None
        return Original(key, head["ETag"].strip('"'), head.get("VersionId"), head["ContentLength"], None)

    def file_sources(self, bucket: str, keys: list[str]) -> dict[str, tuple[str, str] | None]:
        """For each key, the (source-etag, spec-hash) its metadata records, or None when it is absent."""
        found = {}
        for key in keys:
            head = self._unless_missing(self.client.head_object, Bucket=bucket, Key=key)
            metadata = None if head is None else head.get("Metadata", {})
            found[key] = None if metadata is None else (metadata.get("source-etag", ""), metadata.get("spec-hash", ""))
        return found

    def put(self, bucket: str, obj: OutputObject) -> None:
        self.client.put_object(**self._put_arguments(bucket, obj))

    def put_manifest(self, bucket: str, obj: OutputObject, *, replacing: str | None) -> None:
        """Write a manifest only over the one read (ETag `replacing`), or only where none was.

        Raises Conflict when another writer got there first.
        """
        condition = {"IfMatch": f'"{replacing}"'} if replacing else {"IfNoneMatch": "*"}
        try:
            self.client.put_object(**self._put_arguments(bucket, obj), **condition)
        except self.client.exceptions.ClientError as error:
            # If-Match on an object deleted meanwhile answers 404: that is a conflict too.
            if _code(error) in _CONFLICT or (replacing and _code(error) in _MISSING):
                raise Conflict(f"s3://{bucket}/{obj.key} changed since it was read") from None
            raise

    @staticmethod
    def _put_arguments(bucket: str, obj: OutputObject) -> dict:
        arguments = {"Bucket": bucket, "Key": obj.key, "Body": obj.body, "ContentType": obj.content_type,
                     "CacheControl": obj.cache_control, "Metadata": obj.metadata}
        if obj.tagging:
            arguments["Tagging"] = obj.tagging
        return arguments

    def delete(self, bucket: str, keys: list[str]) -> None:
        unique = sorted(set(keys))
        # DeleteObjects names keys in an XML body, which cannot carry control characters; such a
        # key (legal in S3) goes in its own DeleteObject request, where it is part of the URL.
        for key in [k for k in unique if not _XML_SAFE.fullmatch(k)]:
            self.client.delete_object(Bucket=bucket, Key=key)
        unique = [k for k in unique if _XML_SAFE.fullmatch(k)]
        for start in range(0, len(unique), 1000):  # DeleteObjects takes at most 1000 keys
            batch = unique[start:start + 1000]
            response = self.client.delete_objects(
                Bucket=bucket, Delete={"Objects": [{"Key": k} for k in batch], "Quiet": True})
            if response.get("Errors"):
                first = response["Errors"][0]
                raise RuntimeError(f"deleting s3://{bucket}/{first['Key']} failed: {first['Code']} {first['Message']}")

    def backed_up_versions(self, bucket: str, key: str) -> set[str]:
        """The uploads-bucket version ids that the backup bucket holds copies of, for one key."""
        found = set()
        paginator = self.client.get_paginator("list_object_versions")
        for page in paginator.paginate(Bucket=bucket, Prefix=key):
            for version in page.get("Versions", []):
                if version["Key"] != key:
                    continue
                # "null" is the one version of a bucket never versioned (tests, a local stack).
                named = {} if version["VersionId"] == "null" else {"VersionId": version["VersionId"]}
                head = self.client.head_object(Bucket=bucket, Key=key, **named)
                source = head.get("Metadata", {}).get("source-version-id")
                if source:
                    found.add(source)
        return found

    def copy_version(self, source_bucket: str, key: str, version_id: str | None, target_bucket: str) -> dict | None:
        """Server-side copy of exactly one version (or the current one when the bucket has none),
        keeping its headers and metadata and recording which version it is. None when that version
        no longer exists."""
        source = {"Bucket": source_bucket, "Key": key, **({"VersionId": version_id} if version_id else {})}
        try:
            head = self.client.head_object(**source)
        except self.client.exceptions.ClientError:
            # A HEAD's error has no body to say why; a version that no longer exists is "gone".
            if version_id and not self._version_exists(source_bucket, key, version_id):
                return None
            raise
        metadata = {**head.get("Metadata", {}), "source-version-id": head.get("VersionId") or "null",
                    "source-etag": head["ETag"].strip('"')}
        kept = {h: head[h] for h in ("CacheControl", "ContentDisposition", "ContentEncoding", "ContentLanguage")
                if head.get(h)}
        # CopyObject takes up to 5 GB in one request, far above any original's size limit, and
        # keeps a single-part object's ETag; the managed multipart copy would not.
        self.client.copy_object(CopySource=source, Bucket=target_bucket, Key=key, MetadataDirective="REPLACE",
                                ContentType=head.get("ContentType", "application/octet-stream"),
                                Metadata=metadata, **kept)
        return head


    def _version_exists(self, bucket: str, key: str, version_id: str) -> bool:
        paginator = self.client.get_paginator("list_object_versions")
        for page in paginator.paginate(Bucket=bucket, Prefix=key):
            if any(v["Key"] == key and v["VersionId"] == version_id for v in page.get("Versions", [])):
                return True
        return False


class CdnInvalidator:
    """Asks CloudFront to forget unversioned paths that changed; one request per batch of paths."""

    def __init__(self, client, distribution_id: str):
        self.client, self.distribution_id = client, distribution_id

    def invalidate(self, paths: list[str], reference: str) -> None:
        from urllib.parse import quote

        items = sorted({"/" + quote(p) for p in paths})
        self._create(items, reference)

    def invalidate_folders(self, folders: list[str], reference: str) -> list[str]:
        """One wildcard path per folder (`uploads/images/medium/` -> `/uploads/images/medium/*`),
        in one request: CloudFront bills a wildcard as one path, whatever it matches. Returns the paths."""
        from urllib.parse import quote

        items = sorted({"/" + quote(f.rstrip("/"), safe="/") + "/*" for f in folders})
        self._create(items, reference)
        return items

    def _create(self, items: list[str], reference: str) -> None:
        self.client.create_invalidation(DistributionId=self.distribution_id, InvalidationBatch={
            "Paths": {"Quantity": len(items), "Items": items}, "CallerReference": reference})
