"""Make moto's S3 event notifications carry what AWS's carry and the pipeline relies on.

moto 5.2 sends no `versionId` and no `sequencer`, and in a versioned bucket it sends nothing
when a delete marker is created or one of several versions is deleted. AWS sends
`ObjectRemoved:DeleteMarkerCreated` and `ObjectRemoved:Delete` there, each record with the
version and a sequencer that grows with every change of a key. `patch_moto()` adds exactly that,
once per process, for the tests.
"""

from __future__ import annotations

import itertools
import threading
from types import SimpleNamespace
from urllib.parse import quote_plus

_lock = threading.Lock()
_sequence = itertools.count(0x0052_0000_0000_0000)
_patched = False


def next_sequencer() -> str:
    with _lock:
        return f"{next(_sequence):016X}"


def patch_moto() -> None:
    global _patched
    with _lock:
        if _patched:
            return
        _patched = True
    from moto.s3 import models, notifications

    original_event = notifications._get_s3_event

    def s3_event(event_name, bucket, key, notification_id):
        if getattr(key, "etag", None) is None:  # a delete marker or a removed version: no size, no ETag
            key = SimpleNamespace(name=key.name, etag="", size=0, version_id=getattr(key, "version_id", None))
        event = original_event(event_name, bucket, key, notification_id)
        obj = event["Records"][0]["s3"]["object"]
        obj["key"] = quote_plus(key.name, safe="/")  # AWS leaves '/' unencoded, as moto's own record does not
        if event_name.startswith("s3:ObjectRemoved:"):
            del obj["size"], obj["eTag"]
        if bucket.is_versioned and getattr(key, "version_id", None):
            obj["versionId"] = key.version_id
        obj["sequencer"] = next_sequencer()
        return event

    notifications._get_s3_event = s3_event

    delete_object = models.S3Backend.delete_object

    def delete_object_with_events(self, bucket_name, key_name, version_id=None, bypass=False):
        bucket = self.get_bucket(bucket_name)
        versioned = getattr(bucket, "is_versioned", False)
        result = delete_object(self, bucket_name, key_name, version_id=version_id, bypass=bypass)
        if versioned:
            remaining = bucket.keys.getlist(key_name) if key_name in bucket.keys else []
            if version_id is None and remaining:
                notifications.send_event(
                    self.account_id, notifications.S3NotificationEvent.OBJECT_REMOVED_DELETE_MARKER_CREATED_EVENT,
                    bucket, remaining[-1])
            elif version_id is not None and remaining:  # moto notifies only when none remain
                notifications.send_event(
                    self.account_id, notifications.S3NotificationEvent.OBJECT_REMOVED_DELETE_EVENT,
                    bucket, SimpleNamespace(name=key_name, etag="", size=0, version_id=version_id))
        return result

    models.S3Backend.delete_object = delete_object_with_events
