"""What the backup function does for one created original: a server-side copy, never a delete."""

from __future__ import annotations

from pipeline.events import ObjectChange
from pipeline.outcomes import Outcome
from pipeline.storage import S3Store

# Headers worth keeping on the copy, besides content type and user metadata.
KEPT_HEADERS = ("CacheControl", "ContentDisposition", "ContentEncoding", "ContentLanguage")


def backup_created(store: S3Store, change: ObjectChange, backup_bucket: str) -> Outcome:
    source = store.head(change.bucket, change.key)
    if source is None:
        return Outcome(change.key, "gone", "the original was deleted before it could be backed up")
    etag = source["ETag"].strip('"')
    existing = store.head(backup_bucket, change.key)
    if existing is not None and existing.get("Metadata", {}).get("source-etag") == etag:
        return Outcome(change.key, "skipped", "the backup already holds this version")
    store.copy(change.bucket, change.key, backup_bucket, if_match=etag,
               content_type=source.get("ContentType", "application/octet-stream"),
               metadata={**source.get("Metadata", {}), "source-etag": etag},
               headers={h: source[h] for h in KEPT_HEADERS if source.get(h)})
    return Outcome(change.key, "processed", bytes_written=source.get("ContentLength", 0))
