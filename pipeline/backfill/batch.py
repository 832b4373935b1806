"""The batch engine's control plane: every S3 Control and S3 call of an S3 Batch Operations job,
one function each, given the clients (tests stub s3control with botocore's Stubber).

A job invokes the backfill function once per original (invocation schema 2.0, the selection in
`UserArguments`), runs as the stack's batch role, reads its manifest from and writes its
completion report (failed tasks only) to the stack's backfill bucket. It is created with
`ConfirmationRequired`, so nothing runs, and nothing is billed past the job fee, until it is
confirmed.
"""

from __future__ import annotations

import csv
import io
import json
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Callable, Iterable, NamedTuple
from urllib.parse import quote_plus, unquote_plus

MANIFEST_PREFIX = "backfill/manifests/"
REPORT_PREFIX = "backfill/reports"
TERMINAL = {"Complete", "Failed", "Cancelled"}
CSV_FORMAT = "S3BatchOperations_CSV_20180820"


@dataclass(frozen=True)
class JobTarget:
    """What a job needs to know of the stack."""

    account_id: str
    function_arn: str
    role_arn: str
    jobs_bucket: str  # job manifests and completion reports (the stack's backfill bucket)
    uploads_bucket: str


class JobStatus(NamedTuple):
    job_id: str
    status: str  # New, Preparing, Suspended (awaiting confirmation), Ready, Active, Complete, Failed, ...
    total: int | None
    succeeded: int
    failed: int
    active_seconds: int | None
    report_bucket: str | None
    report_prefix: str | None
    reasons: list[str]  # why a job failed or was suspended

    @property
    def finished(self) -> bool:
        return self.status in TERMINAL

    @property
    def awaiting_confirmation(self) -> bool:
        return self.status == "Suspended" and "AwaitingConfirmation" in " ".join(self.reasons)


def account_of(arn: str) -> str:
    """The account id in an ARN (arn:aws:iam::123456789012:role/...)."""
    parts = arn.split(":")
    if len(parts) < 5 or not parts[4].isdigit():
        raise ValueError(f"no account id in {arn!r}")
    return parts[4]


def csv_manifest(bucket: str, keys: Iterable[str]) -> bytes:
    """A job manifest: one `bucket,key` row per original, keys URL-encoded as Batch Operations wants."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    for key in keys:
        writer.writerow([bucket, quote_plus(key, safe="/")])
    return out.getvalue().encode()


def put_manifest(s3, target: JobTarget, name: str, body: bytes) -> dict:
    """Upload a job manifest; the `Manifest` argument of create_job that names it (ARN and ETag)."""
    key = f"{MANIFEST_PREFIX}{name}.csv"
    etag = s3.put_object(Bucket=target.jobs_bucket, Key=key, Body=body, ContentType="text/csv")["ETag"].strip('"')
    return {"Spec": {"Format": CSV_FORMAT, "Fields": ["Bucket", "Key"]},
            "Location": {"ObjectArn": f"arn:aws:s3:::{target.jobs_bucket}/{key}", "ETag": etag}}


def generated_manifest(target: JobTarget, prefix: str, created_before: datetime) -> dict:
    """The `ManifestGenerator` argument: S3 lists the originals under `prefix` itself, those
    created before the plan (later uploads go through the live path anyway)."""
    return {"S3JobManifestGenerator": {
        "SourceBucket": f"arn:aws:s3:::{target.uploads_bucket}",
        "EnableManifestOutput": True,
        "ManifestOutputLocation": {"Bucket": f"arn:aws:s3:::{target.jobs_bucket}",
                                   "ManifestPrefix": MANIFEST_PREFIX.rstrip("/"),
                                   "ManifestFormat": "S3InventoryReport_CSV_20211130"},
        "Filter": {"CreatedBefore": created_before,
                   "KeyNameConstraint": {"MatchAnyPrefix": [prefix]}}}}


def create_job(s3control, target: JobTarget, user_arguments: dict[str, str], *, token: str, description: str,
               manifest: dict | None = None, generator: dict | None = None, priority: int = 10) -> str:
    """Create the job, awaiting confirmation; its id."""
    if (manifest is None) == (generator is None):
        raise ValueError("a job has either a manifest or a manifest generator")
    arguments = {
        "AccountId": target.account_id, "ConfirmationRequired": True, "ClientRequestToken": token,
        "Description": description[:256], "Priority": priority, "RoleArn": target.role_arn,
        "Operation": {"LambdaInvoke": {"FunctionArn": target.function_arn, "InvocationSchemaVersion": "2.0",
                                       "UserArguments": user_arguments}},
        "Report": {"Bucket": f"arn:aws:s3:::{target.jobs_bucket}", "Prefix": REPORT_PREFIX,
                   "Format": "Report_CSV_20180820", "Enabled": True, "ReportScope": "FailedTasksOnly"},
        **({"Manifest": manifest} if manifest else {"ManifestGenerator": generator}),
    }
    return s3control.create_job(**arguments)["JobId"]


def confirm(s3control, account_id: str, job_id: str) -> str:
    return s3control.update_job_status(AccountId=account_id, JobId=job_id, RequestedJobStatus="Ready")["Status"]


def cancel(s3control, account_id: str, job_id: str, reason: str) -> str:
    return s3control.update_job_status(AccountId=account_id, JobId=job_id, RequestedJobStatus="Cancelled",
                                       StatusUpdateReason=reason[:256])["Status"]


def describe(s3control, account_id: str, job_id: str) -> JobStatus:
    job = s3control.describe_job(AccountId=account_id, JobId=job_id)["Job"]
    progress = job.get("ProgressSummary", {})
    report = job.get("Report", {})
    reasons = [f"{f.get('FailureCode', '')}: {f.get('FailureReason', '')}" for f in job.get("FailureReasons", [])]
    if job.get("SuspendedCause"):
        reasons.append(job["SuspendedCause"])
    timers = progress.get("Timers", {})
    return JobStatus(job_id, job["Status"], progress.get("TotalNumberOfTasks"),
                     progress.get("NumberOfTasksSucceeded", 0), progress.get("NumberOfTasksFailed", 0),
                     timers.get("ElapsedTimeInActiveSeconds"), report.get("Bucket", "").split(":::")[-1] or None,
                     report.get("Prefix"), reasons)


def follow(s3control, account_id: str, job_id: str, on_update: Callable[[JobStatus], None], *,
           until: Callable[[JobStatus], bool] = lambda s: s.finished, interval: float = 5.0,
           sleep: Callable[[float], None] = time.sleep) -> JobStatus:
    """Describe the job every `interval` seconds until `until` says so (by default: it ended)."""
    while True:
        status = describe(s3control, account_id, job_id)
        on_update(status)
        if until(status) or status.finished:
            return status
        sleep(interval)


class FailedTask(NamedTuple):
    bucket: str
    key: str
    code: str  # TemporaryFailure (after S3's retries), PermanentFailure, or S3's own error code
    message: str


def report_location(status: JobStatus) -> tuple[str, str] | None:
    """(bucket, key) of the completion report's manifest.json of a finished job."""
    if not status.report_bucket:
        return None
    prefix = (status.report_prefix or "").rstrip("/")
    return status.report_bucket, f"{prefix}/job-{status.job_id}/manifest.json".lstrip("/")


def failed_tasks(s3, bucket: str, manifest_key: str) -> list[FailedTask]:
    """Every failed task a completion report lists (its manifest.json names the CSV files)."""
    manifest = json.loads(s3.get_object(Bucket=bucket, Key=manifest_key)["Body"].read())
    failed = []
    for result in manifest.get("Results", []):
        if result.get("TaskExecutionStatus") != "failed":
            continue
        body = s3.get_object(Bucket=result.get("Bucket", bucket).split(":::")[-1], Key=result["Key"])["Body"].read()
        failed.extend(parse_report_csv(body.decode("utf-8")))
    return failed


def parse_report_csv(text: str) -> list[FailedTask]:
    """Rows of Bucket, Key, VersionId, TaskStatus, ErrorCode, HTTPStatusCode, ResultMessage."""
    rows = []
    for row in csv.reader(io.StringIO(text)):
        if len(row) < 4 or row[3].lower() != "failed":
            continue
        code = row[4] if len(row) > 4 else ""
        message = row[6] if len(row) > 6 else ""
        rows.append(FailedTask(row[0], unquote_plus(row[1]), code, message))
    return rows


def report_from(s3, where: str) -> list[FailedTask]:
    """--retry-from: s3://bucket/key of a report's manifest.json, or a local copy of it or of a CSV."""
    if where.startswith("s3://"):
        bucket, _, key = where[5:].partition("/")
        if key.endswith(".csv"):
            return parse_report_csv(s3.get_object(Bucket=bucket, Key=key)["Body"].read().decode("utf-8"))
        return failed_tasks(s3, bucket, key)
    with open(where, encoding="utf-8") as file:
        text = file.read()
    if where.endswith(".json"):
        manifest = json.loads(text)
        if "failures" in manifest:  # a local run's own report
            return [FailedTask("", f["key"], f["status"], f["reason"]) for f in manifest["failures"]]
        raise ValueError(f"{where}: a completion report's manifest.json names S3 objects: give its s3:// address")
    return parse_report_csv(text)
