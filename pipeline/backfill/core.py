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
                 scope: Scope, *, listed_etag: str | None = None, decided=None, calls=None) -> Result:
    """Converge one original under `scope`. Raises what `apply_change` raises for transient
    trouble (S3 errors, ContendedKey) and PluginFailure; a refused upload is a FAILED result."""
    stored, need = decided or decide(store, processed_bucket, key, registry, scope, listed_etag)
    if not need.work:
        if stored.manifest is not None and stored.manifest["status"] == "failed":
            return Result(key, FAILED_EARLIER, need.reason.removeprefix("failed: "))
        return Result(key, UP_TO_DATE, UP_TO_DATE)
    change = ObjectChange("created", "Backfill", uploads_bucket, key)
    outcome = apply_change(store, change, processed_bucket, registry, scope=scope, stored=stored, calls=calls)
    return result_of(outcome, need)


def result_of(outcome: Outcome, need: Needed) -> Result:
    if outcome.outcome == "failed":
        return Result(outcome.key, FAILED, outcome.reason or "failed")
    if outcome.outcome == "removed":
        return Result(outcome.key, REMOVED, "the original is gone: tombstone written")
    if outcome.outcome == "skipped":
        if outcome.reason == "up to date":  # the original changed to what the manifest already says
            return Result(outcome.key, UP_TO_DATE, UP_TO_DATE)
        # over max_bytes, refused again from its size without a download
        return Result(outcome.key, FAILED_EARLIER, outcome.reason or "failed before")
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


# The backfill function: one S3 Batch Operations task (schema 2.0) in, exactly one result out.
SUCCEEDED, TEMPORARY, PERMANENT = "Succeeded", "TemporaryFailure", "PermanentFailure"
# S3 error codes a retry can fix; S3 Batch Operations redrives a TemporaryFailure task.
RETRYABLE_CODES = {"SlowDown", "Throttling", "ThrottlingException", "RequestTimeout", "RequestTimeoutException",
                   "InternalError", "ServiceUnavailable", "RequestLimitExceeded", "TooManyRequestsException"}
RESULT_STRING_LIMIT = 900  # what a completion report's row keeps of a result


def scope_arguments(scope: Scope) -> dict[str, str]:
    """A Scope as the job's UserArguments (string to string), read back by `scope_from_arguments`."""
    return {"variations": ",".join(sorted(scope.variations)) if scope.variations is not None else "*",
            "force": str(scope.force).lower(), "prune": str(scope.prune).lower(),
            "retryFailed": str(scope.retry_failed).lower()}


def scope_from_arguments(arguments: dict | None) -> Scope:
    arguments = arguments or {}
    names = arguments.get("variations", "*")
    chosen = None if names in ("*", "") else frozenset(n for n in names.split(",") if n)
    flag = lambda name: str(arguments.get(name, "false")).lower() == "true"  # noqa: E731
    return Scope(variations=chosen, force=flag("force"), prune=flag("prune"), retry_failed=flag("retryFailed"))


def failure_code(error: BaseException) -> str:
    """TemporaryFailure for throttling, timeouts, 5xx and lost races; PermanentFailure otherwise
    (a plugin that raised fails every task alike: fix it, then --retry-from the report)."""
    from pipeline.resize import ContendedKey

    if isinstance(error, ContendedKey):
        return TEMPORARY
    try:
        from botocore.exceptions import BotoCoreError, ClientError
    except ImportError:  # pragma: no cover - boto3 comes with the Lambda runtime
        return PERMANENT
    if isinstance(error, ClientError):
        code = str(error.response.get("Error", {}).get("Code", ""))
        status = error.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0
        return TEMPORARY if code in RETRYABLE_CODES or status >= 500 or code.startswith("5") else PERMANENT
    # The SDK's own errors, after its retries: connect and read timeouts, connection resets; and the
    # rare one of configuration (credentials, a parameter), which fails every task alike: retrying
    # those costs only the retries.
    return TEMPORARY if isinstance(error, BotoCoreError) else PERMANENT


def run_task(store: S3Store, uploads_bucket: str, processed_bucket: str, registry: Registry, bucket: str, key: str,
             arguments: dict | None) -> tuple[str, str, Result | None]:
    """(result code, result string, the Result when there was one) of one task."""
    if bucket != uploads_bucket or not keys.is_original(key):
        return PERMANENT, f"not an original of {uploads_bucket}: s3://{bucket}/{key}", None
    try:
        scope = scope_from_arguments(arguments)
        result = backfill_one(store, uploads_bucket, key, processed_bucket, registry, scope)
    except Exception as error:  # noqa: BLE001 - exactly one result per task, whatever happened
        return failure_code(error), f"{type(error).__name__}: {error}"[:RESULT_STRING_LIMIT], None
    if result.status == FAILED:
        return PERMANENT, f"unusable original: {result.detail}"[:RESULT_STRING_LIMIT], result
    return SUCCEEDED, (result.detail if result.status != FAILED_EARLIER else
                       f"failed-earlier: {result.detail}")[:RESULT_STRING_LIMIT], result
