"""The one function that brings an original's processed objects to the original's current state.

Every door uses it: the resize function for each S3 event, `process` (through the same
outputs), and later the backfill and the local stack. It decides and does the minimum: nothing
when the manifest already describes the current version under the current definitions, only
the missing or stale variations when the source bytes are unchanged, everything otherwise, and a
tombstone when the original is gone.

Events for one key arrive in any order, twice, late, or while another invocation works on the
same key. Three rules keep the result equal to "processing the final state alone":

1. Level, not edge: a round reads the manifest, then the original's *current* version, and
   converges to that, whatever the event said. A late event can only ever re-apply the present.
2. The manifest is the commit: it is written last and only over the exact manifest the round
   read (If-Match its ETag, or If-None-Match when there was none). A manifest is never deleted
   (a removed original leaves a "deleted" tombstone), so "none" cannot come back while a round
   runs. A round whose commit fails may have overwritten files of the round that won, so it
   goes round again, forced to re-render and re-put the then-current version.
3. Sequencers only save work: the manifest records the greatest S3 sequencer applied, and an
   event older than that is dropped after one GET, before the original is downloaded.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

from pipeline import keys
from pipeline.events import ObjectChange, sequencer_order
from pipeline.imaging import judging_limits, too_big
from pipeline.outcomes import Outcome
from pipeline.outputs import (Outputs, SourceRef, failed_outputs, listed_keys, outputs_for_original,
                              tombstone_outputs)
from pipeline.registry import Registry
from pipeline.storage import Conflict, Original, S3Store

# Each round ends in a commit or a lost race; a race is lost only to a writer that committed,
# so more than a few rounds means a key under a storm of writes: let Lambda retry later.
MAX_ROUNDS = 5


class ContendedKey(Exception):
    """Other writers kept committing the same manifest first; a retry finishes the work."""


def apply_change(store: S3Store, change: ObjectChange, processed_bucket: str, registry: Registry,
                 invalidate: Callable[[list[str]], None] | None = None) -> Outcome:
    """Bring the processed objects of `change.key` to the current state of the original."""
    path = keys.source_path(change.key)
    manifest_key = keys.manifest_key(path)
    event_order = sequencer_order(change.sequencer)
    forced = False
    for _ in range(MAX_ROUNDS):
        stored = store.read_manifest(processed_bucket, manifest_key)
        previous = stored.manifest
        applied = (previous or {}).get("source", {}).get("sequencer")
        if not forced and event_order and sequencer_order(applied) and sequencer_order(applied) > event_order:
            return Outcome(change.key, "superseded", "a later event for this key was already applied")
        sequencer = max((s for s in (applied, change.sequencer) if s), key=sequencer_order, default=None)

        original = store.get_original(change.bucket, change.key, registry.config.max_bytes)
        outputs, outcome = _plan(original, change.key, previous, sequencer, registry, forced)
        if outputs is None:
            return outcome

        *files, manifest = outputs.objects
        for obj in files:
            store.put(processed_bucket, obj)
        written = {obj.key for obj in files}
        # Files the previous manifest listed that this one does not; for a removed original also
        # whatever the current definitions would have written, in case no manifest listed them.
        doomed = set(listed_keys(previous)) - set(listed_keys(outputs.manifest)) - written
        if original is None:
            doomed |= set(derived_keys(path, registry))
        if doomed:
            store.delete(processed_bucket, sorted(doomed))
        try:
            store.put_manifest(processed_bucket, manifest, replacing=stored.etag)
        except Conflict:
            forced = True
            continue
        if invalidate and previous is not None:
            invalidate(sorted(set(listed_keys(previous)) | written | doomed | {manifest_key}))
        return dataclasses.replace(outcome, bytes_written=sum(len(obj.body) for obj in outputs.objects))
    raise ContendedKey(f"{change.key}: {MAX_ROUNDS} rounds each lost the manifest to another writer")


def _plan(original: Original | None, key: str, previous: dict | None, sequencer: str | None,
          registry: Registry, forced: bool) -> tuple[Outputs | None, Outcome]:
    """What this round writes (None: nothing) and the outcome it reports."""
    if original is None:
        if previous is not None and previous["status"] == "deleted" and not forced:
            return None, Outcome(key, "skipped", "already removed")
        return tombstone_outputs(key, sequencer), Outcome(key, "removed")

    source = SourceRef(key, original.etag, original.version_id, sequencer)
    same_bytes = bool(previous) and previous["source"].get("etag") == original.etag
    same_version = same_bytes and previous["source"].get("version_id") == original.version_id
    if original.body is None:  # over max_bytes: refused from its size, never downloaded
        reason = too_big(original.size, registry.config.max_bytes)
        if not forced and same_version and previous["status"] == "failed" and previous.get("reason") == reason:
            return None, Outcome(key, "skipped", reason)
        return failed_outputs(source, original.size, reason, registry), Outcome(key, "failed", reason)

    if previous is not None and previous["status"] == "failed" and same_version and not forced:
        if previous.get("limits") == judging_limits(registry.config):
            return None, Outcome(key, "skipped", previous.get("reason"))

    only = None
    if same_bytes and previous["status"] == "ready" and not forced:
        only = stale_variations(previous, registry)
        if not only and same_version and set(previous["variations"]) == set(registry.variations):
            return None, Outcome(key, "skipped", "up to date")
    outputs = outputs_for_original(key, original.body, original.etag, registry, version_id=original.version_id,
                                   sequencer=sequencer, only=only, previous=previous if only is not None else None)
    return outputs, Outcome(key, "failed" if outputs.failed else "processed", outputs.reason)


def stale_variations(manifest: dict, registry: Registry) -> set[str]:
    """The variations the current definitions have that the manifest lacks or lists with another spec."""
    listed = manifest["variations"]
    return {name for name, variation in registry.variations.items()
            if name not in listed or listed[name]["spec_hash"] != registry.spec_hash(variation)}


def derived_keys(path: str, registry: Registry) -> list[str]:
    """Every key the current definitions would write for an original's path."""
    return [keys.variation_key(name, path, None if index == 0 else encoder.extension)
            for name, variation in registry.variations.items()
            for index, encoder in enumerate(registry.renditions(variation))]
