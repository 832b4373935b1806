"""S3 event notifications, delivered through SNS, parsed into typed values.

One SNS record carries one S3 message, which may carry several S3 records. Keys arrive
URL-encoded (spaces as '+', unicode percent-encoded) and are decoded with `unquote_plus`.
`s3:TestEvent` messages and keys outside `uploads/images/original/` are ignored.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Iterator, Literal
from urllib.parse import unquote_plus

from pipeline import keys


@dataclass(frozen=True)
class ObjectChange:
    kind: Literal["created", "removed"]
    event_name: str  # e.g. "ObjectCreated:Put"
    bucket: str
    key: str  # decoded
    size: int | None = None  # created only
    etag: str | None = None  # created only, without quotes
    sequencer: str | None = None


class MalformedEvent(ValueError):
    """A record is not an S3 notification in SNS; retrying cannot fix it."""


def object_changes(event: dict[str, Any]) -> Iterator[ObjectChange]:
    """Every change to an original in a Lambda SNS event, in delivery order."""
    for record in event.get("Records", []):
        try:
            message = json.loads(record["Sns"]["Message"])
        except (KeyError, TypeError, ValueError) as error:
            raise MalformedEvent(f"SNS record without a JSON S3 message: {error!r}") from None
        if message.get("Event") == "s3:TestEvent":
            continue
        for s3_record in message.get("Records", []):
            change = _parse_s3_record(s3_record)
            if change is not None and keys.is_original(change.key):
                yield change


def _parse_s3_record(record: dict[str, Any]) -> ObjectChange | None:
    try:
        event_name = record["eventName"]
        bucket = record["s3"]["bucket"]["name"]
        obj = record["s3"]["object"]
        key = unquote_plus(obj["key"])
    except (KeyError, TypeError) as error:
        raise MalformedEvent(f"S3 record without {error}") from None
    if event_name.startswith("ObjectCreated:"):
        etag = obj.get("eTag")
        return ObjectChange("created", event_name, bucket, key, obj.get("size"),
                            etag.strip('"') if etag else None, obj.get("sequencer"))
    if event_name.startswith("ObjectRemoved:"):
        return ObjectChange("removed", event_name, bucket, key, sequencer=obj.get("sequencer"))
    return None
