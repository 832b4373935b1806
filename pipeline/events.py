"""S3 event notifications, delivered through SNS, parsed into typed values.

One SNS record carries one S3 message, which may carry several S3 records. Keys arrive
URL-encoded (spaces as '+', unicode percent-encoded) and are decoded with `unquote_plus`.
`s3:TestEvent` messages are skipped. Only records for the uploads bucket under
`uploads/images/original/` are accepted: anything else (another bucket, a forged record, a key
outside the prefix) is returned as dropped, with the reason, for the handler to log.
"""

from __future__ import annotations

import json
import re
from typing import Any, Literal, NamedTuple
from urllib.parse import unquote_plus

from pipeline import keys

# What the uploads bucket notifies the topic of, for keys under keys.ORIGINAL_PREFIX only: the
# real stack's bucket notification (infra/events.py) and the local stack's are made from these.
NOTIFICATION_EVENTS = ("s3:ObjectCreated:*", "s3:ObjectRemoved:*")


class ObjectChange(NamedTuple):
    kind: Literal["created", "removed"]
    event_name: str  # e.g. "ObjectCreated:Put", "ObjectRemoved:DeleteMarkerCreated"
    bucket: str
    key: str  # decoded
    size: int | None = None  # created only
    etag: str | None = None  # created only, without quotes
    sequencer: str | None = None  # orders the events of one key: a later event has a greater one
    version_id: str | None = None  # the version created, or the version (or delete marker) removed


class Intake(NamedTuple):
    accepted: list[ObjectChange]
    dropped: list[tuple[str, str, str]]  # (bucket, key, reason)


# What S3 writes as a sequencer: hexadecimal, 16 to 18 digits today; a longer one is not S3's.
SEQUENCER = re.compile(r"[0-9A-Fa-f]{1,32}")


class MalformedEvent(ValueError):
    """A record is not an S3 notification in SNS; retrying cannot fix it."""


def sequencer_order(sequencer: str | None) -> tuple[int, str] | None:
    """A sortable form of an S3 sequencer: S3 says to left-pad the shorter with zeros and compare
    as text, which is comparing the hexadecimal numbers; None when the event has none."""
    if not sequencer:
        return None
    return (len(sequencer.lstrip("0")), sequencer.lstrip("0").upper())


def object_changes(event: dict[str, Any], uploads_bucket: str) -> Intake:
    """Every change to an original of `uploads_bucket` in a Lambda SNS event, in delivery order."""
    accepted, dropped = [], []
    for record in event.get("Records", []):
        try:
            message = json.loads(record["Sns"]["Message"])
        except (KeyError, TypeError, ValueError) as error:
            raise MalformedEvent(f"SNS record without a JSON S3 message: {error!r}") from None
        if not isinstance(message, dict) or message.get("Event") == "s3:TestEvent":
            continue
        for s3_record in message.get("Records", []):
            change = _parse_s3_record(s3_record)
            if change is None:
                continue
            if change.bucket != uploads_bucket:
                dropped.append((change.bucket, change.key, f"not the uploads bucket {uploads_bucket!r}"))
            elif not keys.is_original(change.key):
                dropped.append((change.bucket, change.key, f"outside {keys.ORIGINAL_PREFIX!r}"))
            elif not keys.has_plain_segments(keys.source_path(change.key)):
                dropped.append((change.bucket, change.key, "an empty, '.' or '..' path segment: its URLs would "
                                                           "resolve to another original's"))
            else:
                accepted.append(change)
    return Intake(accepted, dropped)


def _parse_s3_record(record: dict[str, Any]) -> ObjectChange | None:
    try:
        event_name = record["eventName"]
        bucket = record["s3"]["bucket"]["name"]
        obj = record["s3"]["object"]
        key = unquote_plus(obj["key"])
    except (KeyError, TypeError) as error:
        raise MalformedEvent(f"S3 record without {error}") from None
    sequencer, version_id = obj.get("sequencer"), obj.get("versionId")
    if not (isinstance(sequencer, str) and SEQUENCER.fullmatch(sequencer)):
        sequencer = None  # S3 writes hexadecimal; anything else cannot be trusted to order events
    if event_name.startswith("ObjectCreated:"):
        etag = obj.get("eTag")
        return ObjectChange("created", event_name, bucket, key, obj.get("size"),
                            etag.strip('"') if etag else None, sequencer, version_id)
    if event_name.startswith("ObjectRemoved:"):
        return ObjectChange("removed", event_name, bucket, key, sequencer=sequencer, version_id=version_id)
    return None
