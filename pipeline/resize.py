"""What the resize function does for one created or removed original, through a storage adapter.

Kept apart from the Lambda handler so that the backfill and the local stack use the same path.
"""

from __future__ import annotations

from pipeline import keys
from pipeline.events import ObjectChange
from pipeline.imaging import too_big
from pipeline.outcomes import Outcome
from pipeline.outputs import Outputs, failed_outputs, manifest_keys, outputs_for_original
from pipeline.registry import Registry
from pipeline.storage import Gone, S3Store


class OriginalChanged(Exception):
    """The original was replaced while its variations were made; a retry renders the new one."""


def resize_created(store: S3Store, change: ObjectChange, processed_bucket: str, registry: Registry) -> Outcome:
    manifest_key = keys.manifest_key(keys.source_path(change.key))
    max_bytes = registry.config.max_bytes
    if change.size is not None and change.size > max_bytes:  # refused before downloading
        outputs = failed_outputs(change.key, change.etag or "", change.size, too_big(change.size, max_bytes))
        previous = store.read_json(processed_bucket, manifest_key)
        if previous is not None and previous == outputs.manifest:
            return Outcome(change.key, "skipped", outputs.reason)
        return _publish(store, change, processed_bucket, outputs, previous, expected_etag=change.etag)

    try:
        data, etag = store.get(change.bucket, change.key)
    except Gone:
        return Outcome(change.key, "gone", "the original was deleted before it could be processed")
    previous = store.read_json(processed_bucket, manifest_key)
    if _up_to_date(previous, etag, registry):
        return Outcome(change.key, "skipped", previous.get("reason"))
    return _publish(store, change, processed_bucket, outputs_for_original(change.key, data, etag, registry),
                    previous, expected_etag=etag)


def _up_to_date(manifest: dict | None, etag: str, registry: Registry) -> bool:
    """True when the stored manifest already describes this ETag under the current definitions."""
    if not manifest or manifest.get("source", {}).get("etag") != etag:
        return False
    if manifest.get("status") == "failed":
        return True  # the same bytes are refused again; nothing would change
    current = {name: registry.spec_hash(v) for name, v in registry.variations.items()}
    return {name: entry.get("spec_hash") for name, entry in manifest.get("variations", {}).items()} == current


def _publish(store: S3Store, change: ObjectChange, bucket: str, outputs: Outputs, previous: dict | None,
             *, expected_etag: str | None) -> Outcome:
    """Put the variations, drop what the previous manifest listed and this one does not, then the manifest."""
    *variations, manifest = outputs.objects
    for obj in variations:
        store.put(bucket, obj)
    stale = set(manifest_keys(previous or {})) - {obj.key for obj in variations}
    if stale:
        store.delete(bucket, sorted(stale))
    current = store.head(change.bucket, change.key)
    if current is None:  # deleted meanwhile: the removal may already have run, so clean up here
        store.delete(bucket, [obj.key for obj in outputs.objects])
        return Outcome(change.key, "gone", "the original was deleted while it was processed")
    if expected_etag and current["ETag"].strip('"') != expected_etag:
        raise OriginalChanged(f"{change.key} was replaced while it was processed; retrying renders the new one")
    store.put(bucket, manifest)  # last: its presence means "ready" (or "failed")
    written = sum(len(obj.body) for obj in outputs.objects)
    return Outcome(change.key, "failed" if outputs.failed else "processed", outputs.reason, written)


def resize_removed(store: S3Store, change: ObjectChange, processed_bucket: str, registry: Registry) -> Outcome:
    """Delete the variations and manifest of a removed original (its backup stays)."""
    if store.head(change.bucket, change.key) is not None:
        return Outcome(change.key, "skipped", "the original was uploaded again after the removal")
    path = keys.source_path(change.key)
    manifest_key = keys.manifest_key(path)
    listed = manifest_keys(store.read_json(processed_bucket, manifest_key) or {})
    # Also what the current definitions would have written, in case no manifest was ever written.
    derived = [keys.variation_key(name, path, encoder.extension)
               for name, variation in registry.variations.items() for encoder in registry.renditions(variation)]
    doomed = sorted(set(listed) | set(derived)) + [manifest_key]
    store.delete(processed_bucket, doomed)
    return Outcome(change.key, "removed")
