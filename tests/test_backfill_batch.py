"""The batch engine's control plane, with botocore's Stubber for S3 Control (moto has no Batch
Operations jobs) inside moto for S3: the job manifest, create, confirm, follow, the report."""

from __future__ import annotations

import argparse
import json
from datetime import datetime, timezone

import boto3
import pytest
from botocore.stub import ANY, Stubber
from moto import mock_aws

from pipeline.backfill import batch, batch_command
from pipeline.backfill.command import Context
from pipeline.registry import load_registry
from pipeline.resize import Scope

ACCOUNT = "123456789012"
TARGET = batch.JobTarget(ACCOUNT, f"arn:aws:lambda:eu-west-1:{ACCOUNT}:function:image-pipeline-dev-backfill",
                         f"arn:aws:iam::{ACCOUNT}:role/backfill-job-role", "photos-jobs", "photos-uploads")


@pytest.fixture
def aws(monkeypatch):
    for name, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                        "AWS_DEFAULT_REGION": "eu-west-1"}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    with mock_aws():
        s3 = boto3.client("s3")
        for bucket in ("photos-jobs", "photos-uploads", "photos-processed"):
            s3.create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
        control = boto3.client("s3control")
        with Stubber(control) as stubber:
            yield s3, control, stubber
            stubber.assert_no_pending_responses()


def job(status: str, total=None, succeeded=0, failed=0, reasons=()):
    return {"Job": {"JobId": "job-1", "Status": status,
                    "ProgressSummary": {**({"TotalNumberOfTasks": total} if total is not None else {}),
                                        "NumberOfTasksSucceeded": succeeded, "NumberOfTasksFailed": failed},
                    "Report": {"Bucket": "arn:aws:s3:::photos-jobs", "Prefix": "backfill/reports", "Enabled": True,
                               "Format": "Report_CSV_20180820", "ReportScope": "FailedTasksOnly"},
                    **({"SuspendedCause": reasons[0]} if reasons else {})}}


def test_a_csv_manifest_of_awkward_keys_and_the_job_that_reads_it(aws):
    s3, control, stubber = aws
    keys = ["uploads/images/original/summer trip/IMG 0042.jpg", "uploads/images/original/a+b/caf\u00e9.jpg"]
    body = batch.csv_manifest("photos-uploads", keys)
    assert body.decode() == ("photos-uploads,uploads/images/original/summer+trip/IMG+0042.jpg\n"
                             "photos-uploads,uploads/images/original/a%2Bb/caf%C3%A9.jpg\n")
    manifest = batch.put_manifest(s3, TARGET, "plan-1", body)
    etag = s3.head_object(Bucket="photos-jobs", Key="backfill/manifests/plan-1.csv")["ETag"].strip('"')
    assert manifest == {"Spec": {"Format": "S3BatchOperations_CSV_20180820", "Fields": ["Bucket", "Key"]},
                        "Location": {"ObjectArn": "arn:aws:s3:::photos-jobs/backfill/manifests/plan-1.csv", "ETag": etag}}
    stubber.add_response("create_job", {"JobId": "job-1"}, {
        "AccountId": ACCOUNT, "ConfirmationRequired": True, "ClientRequestToken": "plan-1",
        "Description": "image-pipeline backfill", "Priority": 10, "RoleArn": TARGET.role_arn, "Manifest": manifest,
        "Operation": {"LambdaInvoke": {"FunctionArn": TARGET.function_arn, "InvocationSchemaVersion": "2.0",
                                       "UserArguments": {"variations": "og", "force": "false", "prune": "false",
                                                         "retryFailed": "false"}}},
        "Report": {"Bucket": "arn:aws:s3:::photos-jobs", "Prefix": "backfill/reports", "Format": "Report_CSV_20180820",
                   "Enabled": True, "ReportScope": "FailedTasksOnly"}})
    from pipeline.backfill.core import scope_arguments

    assert batch.create_job(control, TARGET, scope_arguments(Scope(variations=frozenset({"og"}), prune=False)),
                            token="plan-1", description="image-pipeline backfill", manifest=manifest) == "job-1"


def test_the_manifest_generator_filters_by_prefix_and_creation_time(aws):
    _, control, stubber = aws
    before = datetime(2026, 11, 29, 12, 0, tzinfo=timezone.utc)
    generator = batch.generated_manifest(TARGET, "uploads/images/original/2026/", before)
    spec = generator["S3JobManifestGenerator"]
    assert spec["SourceBucket"] == "arn:aws:s3:::photos-uploads"
    assert spec["Filter"] == {"CreatedBefore": before, "KeyNameConstraint": {"MatchAnyPrefix": ["uploads/images/original/2026/"]}}
    stubber.add_response("create_job", {"JobId": "job-2"}, {
        "AccountId": ACCOUNT, "ConfirmationRequired": True, "ClientRequestToken": "t", "Description": "d",
        "Priority": 10, "RoleArn": TARGET.role_arn, "ManifestGenerator": generator, "Operation": ANY, "Report": ANY})
    assert batch.create_job(control, TARGET, {}, token="t", description="d", generator=generator) == "job-2"


def test_follow_describes_until_the_job_ends_and_the_report_names_the_failed_keys(aws):
    s3, control, stubber = aws
    for response in (job("Preparing"), job("Active", 3, 1, 0), job("Complete", 3, 2, 1)):
        stubber.add_response("describe_job", response, {"AccountId": ACCOUNT, "JobId": "job-1"})
    seen, slept = [], []
    status = batch.follow(control, ACCOUNT, "job-1", seen.append, sleep=slept.append, interval=2)
    assert [s.status for s in seen] == ["Preparing", "Active", "Complete"] and slept == [2, 2]
    assert (status.total, status.succeeded, status.failed) == (3, 2, 1)
    location = batch.report_location(status)
    assert location == ("photos-jobs", "backfill/reports/job-job-1/manifest.json")
    s3.put_object(Bucket="photos-jobs", Key=location[1], Body=json.dumps({
        "Format": "Report_CSV_20180820", "ReportSchema": "Bucket, Key, VersionId, TaskStatus, ErrorCode, "
        "HTTPStatusCode, ResultMessage", "Results": [
            {"TaskExecutionStatus": "failed", "Bucket": "arn:aws:s3:::photos-jobs",
             "Key": "backfill/reports/job-job-1/results/abc.csv"}]}))
    s3.put_object(Bucket="photos-jobs", Key="backfill/reports/job-job-1/results/abc.csv",
                  Body="photos-uploads,uploads/images/original/summer+trip/caf%C3%A9.jpg,,failed,PermanentFailure,"
                       "200,\"unusable original: not an image, it starts with b'shopping'\"\n")
    (failed,) = batch.failed_tasks(s3, *location)
    assert failed.key == "uploads/images/original/summer trip/caf\u00e9.jpg" and failed.code == "PermanentFailure"
    assert "not an image" in failed.message
    assert batch.report_from(s3, f"s3://photos-jobs/{location[1]}") == [failed], "--retry-from takes the report"


def args_for(**overrides) -> argparse.Namespace:
    values = dict(stack=None, uploads_bucket="photos-uploads", processed_bucket="photos-processed", config=None,
                  distribution_id=None, variations=None, prefix="", limit=None, force=False, prune=False,
                  retry_failed=False, engine="batch", jobs=None, dry_run=False, sample=None, yes=True, no_plan=True,
                  backfill_function=TARGET.function_arn, batch_role=TARGET.role_arn, jobs_bucket="photos-jobs",
                  resume=None, retry_from=None, json=True, report=None)
    return argparse.Namespace(**{**values, **overrides})


def test_the_command_creates_confirms_follows_and_reports(aws, capsys, tmp_path):
    s3, control, stubber = aws
    registry = load_registry()
    args = args_for(report=str(tmp_path / "report.json"))
    context = Context(args, {}, "photos-uploads", "photos-processed", registry, registry.config, Scope(prune=False))
    stubber.add_response("create_job", {"JobId": "job-1"}, {
        "AccountId": ACCOUNT, "ConfirmationRequired": True, "ClientRequestToken": ANY, "Description": ANY,
        "Priority": 10, "RoleArn": TARGET.role_arn, "ManifestGenerator": ANY, "Operation": ANY, "Report": ANY})
    stubber.add_response("describe_job", job("Preparing"), {"AccountId": ACCOUNT, "JobId": "job-1"})
    stubber.add_response("describe_job", job("Suspended", 2, reasons=["AwaitingConfirmation"]),
                         {"AccountId": ACCOUNT, "JobId": "job-1"})
    stubber.add_response("update_job_status", {"JobId": "job-1", "Status": "Ready"},
                         {"AccountId": ACCOUNT, "JobId": "job-1", "RequestedJobStatus": "Ready"})
    stubber.add_response("describe_job", job("Complete", 2, 2, 0), {"AccountId": ACCOUNT, "JobId": "job-1"})
    status = batch_command.run(context, s3control=control, s3=s3, sleep=lambda seconds: None)
    out = capsys.readouterr()
    assert status == 0, out.err
    assert "job job-1: 2 tasks; estimated $" in out.err
    summary = json.loads(out.out)
    assert summary["job"]["status"] == "Complete" and summary["job"]["succeeded"] == 2


def test_the_command_cancels_a_job_nobody_confirmed(aws, capsys):
    s3, control, stubber = aws
    registry = load_registry()
    context = Context(args_for(yes=False), {}, "photos-uploads", "photos-processed", registry, registry.config,
                      Scope(prune=False))
    stubber.add_response("create_job", {"JobId": "job-1"}, None)
    stubber.add_response("describe_job", job("Suspended", 5, reasons=["AwaitingConfirmation"]), None)
    stubber.add_response("update_job_status", {"JobId": "job-1", "Status": "Cancelled"},
                         {"AccountId": ACCOUNT, "JobId": "job-1", "RequestedJobStatus": "Cancelled",
                          "StatusUpdateReason": "not confirmed"})
    assert batch_command.run(context, s3control=control, s3=s3, ask=lambda prompt: "n", sleep=lambda s: None) == 0
    assert "job job-1 cancelled" in capsys.readouterr().err
