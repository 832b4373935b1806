"""What the backup function does for one created original: copy exactly the version the event
names into the backup bucket, once; never delete.

The uploads bucket is versioned, so the version still exists even when the key was replaced or
deleted a second later: every version that ever existed reaches the backup, in whatever order
the events come. Each copy records the version it came from (metadata `source-version-id`),
which is how a repeated event is recognised.
"""

from __future__ import annotations

from pipeline.events import ObjectChange
from pipeline.outcomes import Outcome
from pipeline.storage import S3Store


def backup_created(store: S3Store, change: ObjectChange, backup_bucket: str) -> Outcome:
    # "null" names whatever a bucket without versioning holds now, so it never proves a repeat.
    if change.version_id not in (None, "null") and change.version_id in store.backed_up_versions(backup_bucket, change.key):
        return Outcome(change.key, "skipped", f"the backup already holds version {change.version_id}")
    copied = store.copy_version(change.bucket, change.key, change.version_id, backup_bucket)
    if copied is None:
        return Outcome(change.key, "gone", f"version {change.version_id} no longer exists; nothing to copy")
    return Outcome(change.key, "processed", bytes_written=copied.get("ContentLength", 0))
