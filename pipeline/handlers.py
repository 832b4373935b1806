"""The Lambda entry points: parse the event, call the core through the S3 adapter, report.

    pipeline.handlers.resize_handler   UPLOADS_BUCKET, PROCESSED_BUCKET, PIPELINE_CONFIG,
                                       CDN_DISTRIBUTION_ID (optional: invalidate what changed)
    pipeline.handlers.backup_handler   UPLOADS_BUCKET, BACKUP_BUCKET
    pipeline.handlers.backfill_handler UPLOADS_BUCKET, PROCESSED_BUCKET, PIPELINE_CONFIG: one S3 Batch
                                       Operations task (invocation schema 2.0) of `image-pipeline backfill`

Only records for UPLOADS_BUCKET under the originals prefix are acted on; anything else (a forged
record naming another bucket, a key outside the prefix) is logged and dropped.

A permanent failure (not an image, a bomb, too big, corrupt) is logged, recorded in a failed
manifest and returned normally: retrying cannot help. Anything else (throttling, S3 5xx,
timeouts after the SDK's own retries, a plugin that raised: the upload is fine, the code is not)
is raised once every record of the batch has had its turn, so Lambda's asynchronous retries and
then the dead-letter queue take over.
"""

from __future__ import annotations

import functools
import logging
import os
import sys
import time
from typing import Callable

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit

from pipeline.events import ObjectChange, object_changes
from pipeline.outcomes import Outcome

NAMESPACE = "ImagePipeline"


class _CurrentStdout(logging.StreamHandler):
    """Writes to whatever sys.stdout is when a line is logged (Lambda's, or a test's capture)."""

    @property
    def stream(self):
        return sys.stdout

    @stream.setter
    def stream(self, value):
        pass


logger = Logger(service="image-pipeline", logger_handler=_CurrentStdout())
metrics = Metrics(namespace=NAMESPACE, service="image-pipeline")


class RetryableFailure(Exception):
    """Some records failed for a reason that a retry may fix; Lambda retries the event."""


@functools.cache
def s3_client():
    """One client per container, with the SDK's standard retries and bounded timeouts."""
    import boto3
    from botocore.config import Config

    return boto3.client("s3", config=Config(retries={"mode": "standard", "total_max_attempts": 4},
                                            connect_timeout=5, read_timeout=30))


@functools.cache
def cloudfront_client():
    import boto3

    return boto3.client("cloudfront")


@functools.cache
def _registry():
    from pipeline.config import PipelineConfig
    from pipeline.registry import load_registry

    return load_registry(PipelineConfig.from_env())


def _run(event: dict, function: str, work: Callable[[ObjectChange], Outcome]) -> dict:
    outcomes, errors = [], []
    intake = object_changes(event, os.environ["UPLOADS_BUCKET"])
    for bucket, key, reason in intake.dropped:
        logger.warning("dropped", extra={"function": function, "bucket": bucket, "key": key,
                                         "outcome": "dropped", "reason": reason})
        metrics.add_metric(name="RecordsDropped", unit=MetricUnit.Count, value=1)
    for change in intake.accepted:
        started = time.perf_counter()
        try:
            outcome = work(change)
        except Exception as error:  # noqa: BLE001 - reported below, then raised for a retry
            milliseconds = (time.perf_counter() - started) * 1000
            logger.exception("retryable failure", extra={"function": function, "key": change.key,
                                                          "outcome": "error", "reason": repr(error),
                                                          "duration_ms": round(milliseconds, 1)})
            metrics.add_metric(name="ImagesErrored", unit=MetricUnit.Count, value=1)
            errors.append((change.key, error))
            continue
        milliseconds = (time.perf_counter() - started) * 1000
        log = logger.warning if outcome.outcome == "failed" else logger.info
        log(outcome.outcome, extra={"function": function, "key": change.key, "outcome": outcome.outcome,
                                    "reason": outcome.reason, "duration_ms": round(milliseconds, 1),
                                    "bytes_written": outcome.bytes_written})
        if outcome.outcome == "processed":
            metrics.add_metric(name="ImagesProcessed", unit=MetricUnit.Count, value=1)
            metrics.add_metric(name="BytesWritten", unit=MetricUnit.Bytes, value=outcome.bytes_written)
            metrics.add_metric(name="TimePerImage", unit=MetricUnit.Milliseconds, value=milliseconds)
        else:  # failed, skipped, superseded, removed, gone
            metrics.add_metric(name=f"Images{outcome.outcome.capitalize()}", unit=MetricUnit.Count, value=1)
        outcomes.append({"key": outcome.key, "outcome": outcome.outcome, "reason": outcome.reason})
    if errors:
        key, first = errors[0]
        raise RetryableFailure(f"{len(errors)} record(s) failed and will be retried; first: {key}: {first!r}") from first
    return {"results": outcomes}


@metrics.log_metrics
def resize_handler(event: dict, context: object = None) -> dict:
    from pipeline.resize import apply_change
    from pipeline.storage import S3Store

    store, bucket, registry = S3Store(s3_client()), os.environ["PROCESSED_BUCKET"], _registry()
    invalidate = _invalidator()

    def work(change: ObjectChange) -> Outcome:
        return apply_change(store, change, bucket, registry, invalidate)

    return _run(event, "resize", work)


def _invalidator() -> Callable[[list[str]], None] | None:
    """Invalidation of changed unversioned paths, when a distribution is configured.

    Best effort: the stored objects' short Cache-Control already bounds how stale a copy can be,
    so a failed invalidation is logged, never a reason to redo the record.
    """
    from pipeline.caching import DISTRIBUTION_ENV

    distribution = os.environ.get(DISTRIBUTION_ENV)
    if not distribution:
        return None
    import uuid

    from pipeline.storage import CdnInvalidator

    invalidator = CdnInvalidator(cloudfront_client(), distribution)

    def invalidate(paths: list[str]) -> None:
        try:
            invalidator.invalidate(paths, reference=uuid.uuid4().hex)
        except Exception as error:  # noqa: BLE001 - see the docstring
            logger.warning("invalidation failed", extra={"function": "resize", "paths": paths, "reason": repr(error)})

    return invalidate


@metrics.log_metrics
def backup_handler(event: dict, context: object = None) -> dict:
    from pipeline.backup import backup_created
    from pipeline.storage import S3Store

    store, bucket = S3Store(s3_client()), os.environ["BACKUP_BUCKET"]

    def work(change: ObjectChange) -> Outcome:
        if change.kind == "created":
            return backup_created(store, change, bucket)
        return Outcome(change.key, "skipped", "backups are never deleted")

    return _run(event, "backup", work)


@metrics.log_metrics
def backfill_handler(event: dict, context: object = None) -> dict:
    """One S3 Batch Operations task (schema 2.0; the selection in the job's UserArguments) in,
    exactly one result out: Succeeded with what was done ("rendered:medium,og", "up-to-date"),
    PermanentFailure for an unusable original, TemporaryFailure for throttling, timeouts and 5xx
    (S3 redrives those)."""
    from aws_lambda_powertools.utilities.data_classes import (S3BatchOperationEvent, S3BatchOperationResponse,
                                                              S3BatchOperationResponseRecord)

    from pipeline.backfill.core import run_task
    from pipeline.storage import S3Store

    batch = S3BatchOperationEvent(event)
    task = batch.task  # schema 2.0 sends one task per invocation; the key arrives URL-encoded
    started = time.perf_counter()
    code, message, result = run_task(S3Store(s3_client()), os.environ["UPLOADS_BUCKET"],
                                     os.environ["PROCESSED_BUCKET"], _registry(), task.s3_bucket, task.s3_key,
                                     batch.job.user_arguments)
    milliseconds = (time.perf_counter() - started) * 1000
    log = logger.info if code == "Succeeded" else logger.warning
    log(code, extra={"function": "backfill", "key": task.s3_key, "job": batch.job.get_id,
                     "outcome": result.status if result else "error", "reason": message,
                     "duration_ms": round(milliseconds, 1)})
    metrics.add_metric(name=f"Backfill{code}", unit=MetricUnit.Count, value=1)
    if result is not None and result.rendered:
        metrics.add_metric(name="ImagesProcessed", unit=MetricUnit.Count, value=1)
        metrics.add_metric(name="TimePerImage", unit=MetricUnit.Milliseconds, value=milliseconds)
    response = S3BatchOperationResponse(batch.invocation_schema_version, batch.invocation_id, "PermanentFailure")
    response.add_result(S3BatchOperationResponseRecord(task.task_id, code, message))
    return response.asdict()
