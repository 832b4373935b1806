"""One original, the backfill's way: decide from the manifest alone, and do the work, if any,
through the resize path's own `apply_change`.

An unchanged image costs one GET (its manifest): the original is downloaded only when a
variation must be rendered, and the manifest already read is handed to `apply_change`, whose
commit stays conditional on its ETag, so a live upload landing meanwhile wins (the backfill goes
round again on the then-current version). Both engines and the backfill function call
`backfill_one`; it imports nothing the Lambda artifact lacks.
"""

from __future__ import annotations

from typing import NamedTuple

from pipeline import keys
from pipeline.events import ObjectChange
from pipeline.outcomes import Outcome
from pipeline.registry import Registry
from pipeline.resize import Needed, Scope, apply_change, needed
from pipeline.storage import S3Store

MAX_WILDCARDS = 15  # CloudFront: wildcard invalidation paths in progress at one time

# What happened to one original in a backfill: each is a column of the progress and the summary.
RENDERED, UP_TO_DATE, FAILED, FAILED_EARLIER, REMOVED, ERROR = (
    "rendered", "up-to-date", "failed", "failed-earlier", "removed", "error")


class Result(NamedTuple):
    key: str
    status: str  # one of the six above
    detail: str  # what was done or why not: "rendered:medium,og", "up-to-date", the failure's reason
    rendered: tuple[str, ...] = ()
    pruned: tuple[str, ...] = ()
    requests: dict | None = None  # S3 requests made for it, by operation (filled in by the engine)


def decide(store: S3Store, processed_bucket: str, key: str, registry: Registry, scope: Scope,
           listed_etag: str | None = None):
    """(the stored manifest, what it needs): one GET."""
    stored = store.read_manifest(processed_bucket, keys.manifest_key(keys.source_path(key)))
    return stored, needed(stored.manifest, registry, scope, source_etag=listed_etag)


def backfill_one(store: S3Store, uploads_bucket: str, key: str, processed_bucket: str, registry: Registry,
                 scope: Scope, *, listed_etag: str | None = None, decided=None) -> Result:
    """Converge one original under `scope`. Raises what `apply_change` raises for transient
    trouble (S3 errors, ContendedKey) and PluginFailure; a refused upload is a FAILED result."""
    stored, need = decided or decide(store, processed_bucket, key, registry, scope, listed_etag)
    if not need.work:
        if stored.manifest is not None and stored.manifest["status"] == "failed":
            return Result(key, FAILED_EARLIER, need.reason.removeprefix("failed: "))
        return Result(key, UP_TO_DATE, UP_TO_DATE)
    change = ObjectChange("created", "Backfill", uploads_bucket, key)
    outcome = apply_change(store, change, processed_bucket, registry, scope=scope, stored=stored)
    return result_of(outcome, need)


def result_of(outcome: Outcome, need: Needed) -> Result:
    if outcome.outcome == "failed":
        return Result(outcome.key, FAILED, outcome.reason or "failed")
    if outcome.outcome == "removed":
        return Result(outcome.key, REMOVED, "the original is gone: tombstone written")
    if outcome.outcome == "skipped":  # the original changed to what the manifest already says
        return Result(outcome.key, UP_TO_DATE, UP_TO_DATE)
    done = [f"rendered:{','.join(outcome.rendered)}"] if outcome.rendered else []
    done += [f"pruned:{','.join(outcome.pruned)}"] if outcome.pruned else []
    return Result(outcome.key, RENDERED, " ".join(done) or "manifest updated", outcome.rendered, outcome.pruned)


def invalidation_prefixes(rendered: set[str], pruned: set[str], registry: Registry) -> list[str]:
    """The unversioned folders a run changed: one wildcard per variation (and per alternate
    folder), never one path per image; the manifests' folder too, when any manifest changed."""
    folders = set()
    for name in rendered | pruned:
        folders.add(f"{keys.IMAGES_PREFIX}{name}/")
        # The alternates' folders (large.webp/): a pruned variation's as far as today's encoders know.
        folders.update(f"{keys.IMAGES_PREFIX}{name}.{e.extension}/" for e in registry.encoders.values() if e.alongside)
    if folders:
        folders.add(keys.MANIFEST_PREFIX)
    if len(folders) > MAX_WILDCARDS:  # CloudFront runs at most 15 wildcard paths at once
        return [keys.IMAGES_PREFIX]
    return sorted(folders)
