"""The one function that brings an original's processed objects to the original's current state.

Every door uses it: the resize function for each S3 event, `process` (through the same
outputs), the backfill (pipeline/backfill) and later the local stack. It decides and does the minimum: nothing
when the manifest already describes the current version under the current definitions, only
the missing or stale variations when the source bytes are unchanged, everything otherwise, and a
tombstone when the original is gone.

Events for one key arrive in any order, twice, late, or while another invocation works on the
same key. Three rules keep the result equal to "processing the final state alone":

1. Level, not edge: a round reads the manifest, then the original's *current* version, and
   converges to that, whatever the event said. A late event can only ever re-apply the present.
   The first round of an event that names its version reads both at once (one round trip, not
   two). That read is used as it is where there was no manifest (nothing committed before it) or
   the manifest names the very version read; otherwise a HEAD after the manifest must still find
   that version, as a later event or a late one converging under an older sequencer may have
   committed a newer version in between. A forced round always reads after the manifest.
2. The manifest is the commit: it is written last and only over the exact manifest the round
   read (If-Match its ETag, or If-None-Match when there was none). A manifest is never deleted
   (a removed original leaves a "deleted" tombstone), so "none" cannot come back while a round
   runs. A round whose commit fails may have overwritten files of the round that won, so it
   goes round again, forced to re-render and re-put the then-current version.
3. Sequencers only save work: the manifest records the greatest S3 sequencer applied, and an
   event older than that is dropped after the manifest's GET and a HEAD, without rendering.

Within a round the files are put as each variation is encoded, while the next are made, where
the manifest read lists no files (a new upload); otherwise all together once the rendering has
succeeded, so that a plugin failing part way never leaves a live manifest over new pixels. The
deletions and then the manifest wait until every put has succeeded. A failed put fails the round
and leaves the manifest as it was.

A `Scope` says how much a call may do. The live path's is the default: every variation, and
whatever the current definitions no longer have is deleted. The backfill narrows it (some
variations, keep the undefined ones, re-render even what is current, retry failed uploads) and
decides from the manifest alone, with `needed`, whether to call `apply_change` at all.
"""

from __future__ import annotations

import dataclasses
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from typing import Callable, NamedTuple

from pipeline import keys
from pipeline.events import ObjectChange, sequencer_order
from pipeline.imaging import judging_limits, too_big
from pipeline.outcomes import Outcome
from pipeline.outputs import (OutputObject, Outputs, SourceRef, failed_outputs, listed_keys, manifest_outputs,
                              outputs_for_original, tombstone_outputs)
from pipeline.registry import Registry
from pipeline.storage import Conflict, Original, S3Store, StoredManifest

# Each round ends in a commit or a lost race; a race is lost only to a writer that committed,
# so more than a few rounds means a key under a storm of writes: let Lambda retry later.
MAX_ROUNDS = 5
# S3 calls of one round in flight at once: the two reads, or the puts of the variations (six by
# default, more with alternates); under the boto3 client's pool of 10 connections.
STORE_THREADS = 8


class ContendedKey(Exception):
    """Other writers kept committing the same manifest first; a retry finishes the work."""


@dataclasses.dataclass(frozen=True)
class Scope:
    """How much one call may do for an original whose manifest describes its current bytes.

    An original without such a manifest (none, another version's, a tombstone) always gets
    everything: nothing less would be true of its current bytes.
    """

    variations: frozenset[str] | None = None  # only these may be (re-)rendered; None: all defined
    force: bool = False  # re-render the chosen variations even when their spec hash is current
    prune: bool = True  # delete variations the definitions no longer have; False keeps their entries
    retry_failed: bool = False  # process a failed upload again even under the limits that refused it


LIVE = Scope()


class Needed(NamedTuple):
    """What the current definitions want done to one original, judged from its manifest alone."""

    render: frozenset[str]  # variations to render
    prune: frozenset[str]  # variations no longer defined whose files go
    reason: str  # why, or "up to date"
    everything: bool = False  # the manifest does not describe the current bytes: a full render

    @property
    def work(self) -> bool:
        return bool(self.render or self.prune or self.everything)


def needed(manifest: dict | None, registry: Registry, scope: Scope = LIVE, *, source_etag: str | None = None) -> Needed:
    """What to do for an original, from its manifest and, when known (a listing gives it), the
    ETag of its current bytes; nothing is downloaded. A "failed" manifest is retried when the
    limits that refused it have changed, or with `scope.retry_failed`."""
    defined = frozenset(registry.variations)
    if manifest is None:
        return Needed(defined, frozenset(), "no manifest", True)
    status = manifest["status"]
    if status == "deleted":
        return Needed(defined, frozenset(), "a removal is recorded but the original exists", True)
    if source_etag is not None and manifest["source"].get("etag") != source_etag:
        return Needed(defined, frozenset(), "the manifest describes other bytes", True)
    if status == "failed":
        if scope.retry_failed:
            return Needed(defined, frozenset(), "failed before; retried", True)
        if manifest.get("limits") != judging_limits(registry.config):
            return Needed(defined, frozenset(), "failed under other limits", True)
        return Needed(frozenset(), frozenset(), f"failed: {manifest.get('reason')}")
    chosen = defined if scope.variations is None else defined & scope.variations
    render = chosen if scope.force else frozenset(stale_variations(manifest, registry)) & chosen
    prune = frozenset(manifest["variations"]) - defined if scope.prune else frozenset()
    reasons = [f"{'re-render' if scope.force else 'missing or stale'}: {', '.join(sorted(render))}"] if render else []
    reasons += [f"no longer defined: {', '.join(sorted(prune))}"] if prune else []
    return Needed(render, prune, "; ".join(reasons) or "up to date")


def apply_change(store: S3Store, change: ObjectChange, processed_bucket: str, registry: Registry,
                 invalidate: Callable[[list[str]], None] | None = None, scope: Scope = LIVE,
                 stored: StoredManifest | None = None, calls: Executor | None = None) -> Outcome:
    """Bring the processed objects of `change.key` to the current state of the original.

    `stored` is the manifest the caller has just read (the backfill decides from it), used
    instead of reading it again in the first round; the commit is still conditional on its ETag.
    `calls` runs the S3 calls that may overlap (default: a pool of STORE_THREADS threads).
    """
    if calls is None:
        with ThreadPoolExecutor(STORE_THREADS, thread_name_prefix="s3") as pool:
            return apply_change(store, change, processed_bucket, registry, invalidate, scope, stored, pool)
    path = keys.source_path(change.key)
    manifest_key = keys.manifest_key(path)
    too_long = _too_long(path, registry)
    if too_long:
        return Outcome(change.key, "failed", too_long)
    event_order = sequencer_order(change.sequencer)
    forced = False
    for round_ in range(1, MAX_ROUNDS + 1):
        early = None  # the original, read at the same time as the manifest (rule 1)
        if stored is None or round_ > 1:
            if round_ == 1 and event_order:
                early = calls.submit(store.get_original, change.bucket, change.key, registry.config.max_bytes)
            stored = store.read_manifest(processed_bucket, manifest_key)
        previous = _trusted(stored.manifest, change.key)
        applied = (previous or {}).get("source", {}).get("sequencer")
        if not forced and event_order and sequencer_order(applied) and sequencer_order(applied) > event_order:
            # A later event was applied. Only a HEAD, not the download, tells whether its result
            # still describes the original and its files are whole; if so there is nothing to do.
            if _describes(previous, store.head_original(change.bucket, change.key)) and _intact(
                    store, processed_bucket, previous, path, registry):
                return Outcome(change.key, "superseded", "a later event for this key was already applied",
                               rounds=round_)
            forced = True
        sequencer = max((s for s in (applied, change.sequencer) if s), key=sequencer_order, default=None)

        if early is not None and not forced and _still_current(store, change, early.result(), stored, previous):
            original = early.result()
        else:  # after the manifest; an early read not used is let go (its body is one more upload in memory)
            early = None
            original = _read_original(store, change, previous, registry, scope, forced)
        # Files are put while the next ones render only where they can replace no file a live
        # manifest lists: a plugin failing part way must not leave that manifest over new pixels.
        puts = _Puts(store, processed_bucket, calls)
        on_file = puts.start if not listed_keys(previous) else None
        try:
            outputs, outcome = _plan(original, change.key, previous, sequencer, registry, forced, scope, on_file)
            if outputs is None:
                # Nothing to change, as far as the manifest says. A round that lost its commit and then
                # died (a timeout, a crash) may have left its files under this manifest: check first.
                if forced or _intact(store, processed_bucket, previous, path, registry):
                    return dataclasses.replace(outcome, rounds=round_)
                forced = True
                original = _downloaded(store, change, original, registry)  # a forced plan renders
                outputs, outcome = _plan(original, change.key, previous, sequencer, registry, forced, scope,
                                         on_file)
            *files, manifest = outputs.objects
            for obj in files:
                if obj.key not in puts.started:
                    puts.start(obj)
        except BaseException:
            puts.settle()  # no put outlives the round; the error that stopped it is the one raised
            raise
        puts.finish()  # every put has ended, and all succeeded, before anything is deleted or committed
        written = {obj.key for obj in files}
        # Files the previous manifest listed that this one does not; for a removed original also
        # whatever the current definitions would have written, in case no manifest listed them;
        # and files put before the source turned out to be unusable (a plugin's RejectedImage).
        doomed = (set(listed_keys(previous)) | set(puts.started)) - set(listed_keys(outputs.manifest)) - written
        if original is None or forced:
            doomed |= set(derived_keys(path, registry)) - set(listed_keys(outputs.manifest))
        if doomed:
            store.delete(processed_bucket, sorted(doomed))
        try:
            store.put_manifest(processed_bucket, manifest, replacing=stored.etag)
        except Conflict:
            forced = True
            continue
        if invalidate and previous is not None:
            invalidate(sorted(set(listed_keys(previous)) | written | doomed | {manifest_key}))
        rendered = tuple(r.variation.name for r in outputs.rendering.variations) if outputs.rendering else ()
        pruned = tuple(sorted(set((previous or {}).get("variations", {})) - set(outputs.manifest["variations"])
                              - set(registry.variations)))
        return dataclasses.replace(outcome, bytes_written=sum(len(obj.body) for obj in outputs.objects),
                                   rendered=rendered, pruned=pruned, rounds=round_)
    raise ContendedKey(f"{change.key}: {MAX_ROUNDS} rounds each lost the manifest to another writer")


class _Puts:
    """The files of one round, put while the variations after them are rendered."""

    def __init__(self, store: S3Store, bucket: str, calls: Executor):
        self.store, self.bucket, self.calls = store, bucket, calls
        self.started: dict[str, Future] = {}

    def start(self, obj: OutputObject) -> None:
        self.started[obj.key] = self.calls.submit(self.store.put, self.bucket, obj)

    def settle(self) -> list[BaseException]:
        """Wait for every put to end; their failures."""
        failures = [future.exception() for future in list(self.started.values())]  # each waits for its put
        return [failure for failure in failures if failure is not None]

    def finish(self) -> None:
        """Wait for every put; raise the first failure, once all have ended."""
        for failure in self.settle():
            raise failure


def _plan(original: Original | None, key: str, previous: dict | None, sequencer: str | None,
          registry: Registry, forced: bool, scope: Scope,
          on_file: Callable[[OutputObject], None] | None) -> tuple[Outputs | None, Outcome]:
    """What this round writes (None: nothing) and the outcome it reports."""
    if original is None:
        if previous is not None and previous["status"] == "deleted" and not forced:
            return None, Outcome(key, "skipped", "already removed")
        return tombstone_outputs(key, sequencer), Outcome(key, "removed")

    source = SourceRef(key, original.etag, original.version_id, sequencer)
    same_bytes = bool(previous) and previous["source"].get("etag") == original.etag
    same_version = same_bytes and previous["source"].get("version_id") == original.version_id
    if original.size > registry.config.max_bytes:  # refused from its size, never downloaded
        reason = too_big(original.size, registry.config.max_bytes)
        if not forced and same_version and previous["status"] == "failed" and previous.get("reason") == reason:
            return None, Outcome(key, "skipped", reason)
        return failed_outputs(source, original.size, reason, registry), Outcome(key, "failed", reason)

    if previous is not None and previous["status"] == "failed" and same_version and not forced:
        if previous.get("limits") == judging_limits(registry.config) and not scope.retry_failed:
            return None, Outcome(key, "skipped", previous.get("reason"))

    only = None
    current = same_bytes and previous["status"] == "ready"
    if current and not forced:
        wanted = needed(previous, registry, scope)
        only = set(wanted.render)
        if not only and same_version and not wanted.prune:
            return None, Outcome(key, "skipped", "up to date")
    # Entries of variations no longer defined stay when the scope keeps them and the bytes they
    # were made from are still the original's; a new source takes them away with everything else.
    kept = {} if scope.prune or not current else {
        name: entry for name, entry in previous["variations"].items() if name not in registry.variations}
    if only is not None and not only:  # the same bytes, nothing to render: the manifest alone
        return manifest_outputs(source, original.size, registry, previous, kept), Outcome(key, "processed")
    outputs = outputs_for_original(key, original.body, original.etag, registry, version_id=original.version_id,
                                   sequencer=sequencer, only=only, previous=previous if only is not None else None,
                                   kept=kept, on_file=on_file)
    return outputs, Outcome(key, "failed" if outputs.failed else "processed", outputs.reason)


def _trusted(manifest: dict | None, key: str) -> dict | None:
    """The manifest read, if it is this original's: its source names `key` and every file it lists
    is one of this original's. Anything else is treated as missing (and rewritten), so a crafted
    or misplaced manifest can never make a round delete another original's files."""
    if manifest is None or manifest["source"].get("key") != key:
        return None
    path = keys.source_path(key)
    return manifest if all(keys.belongs_to(k, path) for k in listed_keys(manifest)) else None


def _still_current(store: S3Store, change: ObjectChange, original: Original | None, stored: StoredManifest,
                   previous: dict | None) -> bool:
    """May the original read together with the manifest be used? Yes where there was no manifest at
    all (none can have been committed before that read) or the manifest names the very version
    read. Otherwise only if a HEAD, after the manifest, still finds that version: the commit the
    manifest read saw may describe a version newer than the read (a late or repeated event
    converges to the present under its own, older sequencer), which no later event would redo."""
    if stored.etag is None or _describes(previous, original):
        return True
    return _version(store.head_original(change.bucket, change.key)) == _version(original)


def _read_original(store: S3Store, change: ObjectChange, previous: dict | None, registry: Registry, scope: Scope,
                   forced: bool) -> Original | None:
    """The original's current version, its bytes downloaded only if they may be rendered: when a
    "ready" manifest lists this original's bytes and nothing of it is to be rendered (a backfill
    that only prunes), a HEAD tells the round all it needs. (A live event reads the original
    together with the manifest instead, before either is known: see apply_change.)"""
    if not forced and previous is not None and previous["status"] == "ready" \
            and not needed(previous, registry, scope).render:
        head = store.head_original(change.bucket, change.key)
        if head is None or head.etag == previous["source"].get("etag"):
            return head
    return store.get_original(change.bucket, change.key, registry.config.max_bytes)


def _downloaded(store: S3Store, change: ObjectChange, original: Original | None, registry: Registry) -> Original | None:
    """`original` with its bytes: read again if a HEAD was all the round had (the version may
    have changed since: the plan is made from what this read finds)."""
    if original is None or original.body is not None or original.size > registry.config.max_bytes:
        return original
    return store.get_original(change.bucket, change.key, registry.config.max_bytes)


def _version(original: Original | None) -> tuple[str, str | None] | None:
    return None if original is None else (original.etag, original.version_id)


def _describes(manifest: dict | None, current: Original | None) -> bool:
    """Does the manifest describe the original's current state (its version, or its absence)?"""
    if manifest is None:
        return False
    if current is None:
        return manifest["status"] == "deleted"
    return manifest["status"] != "deleted" and (manifest["source"].get("etag"), manifest["source"].get("version_id")) \
        == _version(current)


def _intact(store: S3Store, bucket: str, manifest: dict | None, path: str, registry: Registry) -> bool:
    """Do the stored files match the manifest: each listed file there and made from its source with
    its spec, and for a tombstone none of the files the definitions would write? One HEAD a file,
    and only on the way to doing nothing."""
    if manifest is None:
        return False
    if manifest["status"] in ("deleted", "failed"):  # no files at all
        return all(found is None for found in store.file_sources(bucket, derived_keys(path, registry)).values())
    expected = {}
    for entry in manifest["variations"].values():
        for file in [entry, *entry.get("alternates", [])]:
            expected[file["key"]] = (manifest["source"].get("etag"), entry["spec_hash"])
    return store.file_sources(bucket, sorted(expected)) == expected


def _too_long(path: str, registry: Registry) -> str | None:
    """Why the original cannot be processed when a key it needs passes S3's limit, or None."""
    longest = max([keys.manifest_key(path), *derived_keys(path, registry)], key=lambda k: len(k.encode()))
    if len(longest.encode()) <= keys.MAX_KEY_BYTES:
        return None
    return (f"the key {longest[:60]}... would be {len(longest.encode())} bytes, over S3's limit of "
            f"{keys.MAX_KEY_BYTES}: the original's path is too long for its variations")


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
