"""Storage adapters: where the objects of `pipeline.outputs` are written.

`LocalDirectory` serves `python -m pipeline process`: each object becomes a file at its key.
"""

from __future__ import annotations

import os

from pipeline.outputs import OutputObject


class LocalDirectory:
    def __init__(self, root: str | os.PathLike):
        self.root = os.fspath(root)

    def put(self, obj: OutputObject) -> str:
        target = os.path.join(self.root, *obj.key.split("/"))
        os.makedirs(os.path.dirname(target), exist_ok=True)
        temporary = target + ".partial"
        with open(temporary, "wb") as file:
            file.write(obj.body)
        os.replace(temporary, target)  # a reader never sees half a file
        return target


class Gone(Exception):
    """The object is no longer there (deleted after the event was sent)."""


class S3Store:
    """The S3 calls the functions make, and nothing else; given a boto3 client, never making one."""

    def __init__(self, client):
        self.client = client

    def head(self, bucket: str, key: str) -> dict | None:
        try:
            return self.client.head_object(Bucket=bucket, Key=key)
        except self.client.exceptions.ClientError as error:
            if error.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return None
            raise

    def get(self, bucket: str, key: str) -> tuple[bytes, str]:
        """The object's bytes and ETag (without quotes)."""
        try:
            response = self.client.get_object(Bucket=bucket, Key=key)
        except self.client.exceptions.NoSuchKey:
            raise Gone(f"s3://{bucket}/{key}") from None
        return response["Body"].read(), response["ETag"].strip('"')

    def read_json(self, bucket: str, key: str) -> dict | None:
        import json

        try:
            data, _ = self.get(bucket, key)
        except Gone:
            return None
        try:
            return json.loads(data)
        except ValueError:
            return None  # a broken manifest is rewritten, not trusted

    def put(self, bucket: str, obj: OutputObject) -> None:
        self.client.put_object(Bucket=bucket, Key=obj.key, Body=obj.body, ContentType=obj.content_type,
                               CacheControl=obj.cache_control, Metadata=obj.metadata)

    def delete(self, bucket: str, keys: list[str]) -> None:
        unique = sorted(set(keys))
        for start in range(0, len(unique), 1000):  # DeleteObjects takes at most 1000 keys
            batch = unique[start:start + 1000]
            response = self.client.delete_objects(
                Bucket=bucket, Delete={"Objects": [{"Key": k} for k in batch], "Quiet": True})
            if response.get("Errors"):
                first = response["Errors"][0]
                raise RuntimeError(f"deleting s3://{bucket}/{first['Key']} failed: {first['Code']} {first['Message']}")

    def copy(self, source_bucket: str, key: str, target_bucket: str, *, if_match: str,
             content_type: str, metadata: dict[str, str], headers: dict[str, str]) -> None:
        """Server-side copy (no download), of exactly the version whose ETag is `if_match`."""
        self.client.copy(
            {"Bucket": source_bucket, "Key": key}, target_bucket, key,
            ExtraArgs={"CopySourceIfMatch": f'"{if_match}"', "MetadataDirective": "REPLACE",
                       "ContentType": content_type, "Metadata": metadata, **headers},
        )
