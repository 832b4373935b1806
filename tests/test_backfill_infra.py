"""The backfill's share of the Pulumi program, under mocks, and the guardrail that watches it."""

from __future__ import annotations

import json

import pytest

from policy import rules
from policy.rules import Resource
from pulumi_harness import ACCOUNT, deploy
from test_infra import allowed, as_list, buckets, statements

FUNCTION = "aws:lambda/function:Function"


@pytest.fixture(scope="module", params=["dev", "prod"])
def stack(request):
    return request.param, deploy(request.param)


def role_policy(deployment, role_name: str) -> list[dict]:
    return [s for r in deployment.of_type("aws:iam/rolePolicy:RolePolicy") if r.inputs["role"] == role_name
            for s in statements(r.inputs["policy"])]


def test_the_backfill_function_is_the_resize_artifact_with_its_own_handler_and_concurrency(stack):
    name, deployment = stack
    functions = {r.inputs["name"]: r for r in deployment.of_type(FUNCTION)}
    resize, backfill = functions[f"image-pipeline-{name}-resize"], functions[f"image-pipeline-{name}-backfill"]
    assert backfill.inputs["handler"] == "pipeline.handlers.backfill_handler"
    assert backfill.inputs["reservedConcurrentExecutions"] == 10
    for same in ("runtime", "architectures", "layers", "memorySize", "timeout"):
        assert backfill.inputs[same] == resize.inputs[same], same
    assert backfill.inputs["code"].path == resize.inputs["code"].path, "one artifact"
    variables = backfill.inputs["environment"]["variables"]
    b = {role: bucket["bucket"] for role, bucket in buckets(deployment).items()}
    assert variables["UPLOADS_BUCKET"] == b["uploads"] and variables["PROCESSED_BUCKET"] == b["processed"]
    assert variables["PIPELINE_CONFIG"] == resize.inputs["environment"]["variables"]["PIPELINE_CONFIG"]
    assert "CDN_DISTRIBUTION_ID" not in variables, "the command invalidates one wildcard per variation, not the tasks"
    assert variables["MALLOC_ARENA_MAX"] == resize.inputs["environment"]["variables"]["MALLOC_ARENA_MAX"] == "1"


def test_backfill_concurrency_comes_from_the_stack_config_and_must_be_positive():
    deployment = deploy("dev", {"backfillConcurrency": "3"})
    (backfill,) = [r for r in deployment.of_type(FUNCTION) if r.inputs["name"].endswith("-backfill")]
    assert backfill.inputs["reservedConcurrentExecutions"] == 3
    from pipeline.config import ConfigError

    with pytest.raises(ConfigError, match="backfillConcurrency"):
        deploy("dev", {"backfillConcurrency": "0"})


def test_the_backfill_function_may_do_what_resize_does_to_s3_and_nothing_more(stack):
    _, deployment = stack
    b = {role: f"arn:aws:s3:::{bucket['bucket']}" for role, bucket in buckets(deployment).items()}
    documents = role_policy(deployment, "backfill-function-role-0a1b2c")
    assert allowed(documents, "s3:GetObject", f"{b['uploads']}/uploads/images/original/a b.jpg")
    assert allowed(documents, "s3:PutObject", f"{b['processed']}/uploads/images/og/a b.jpg")
    assert allowed(documents, "s3:DeleteObject", f"{b['processed']}/uploads/images/og/a b.jpg")
    for action in ("s3:PutObject", "s3:DeleteObject", "s3:DeleteObjectVersion"):
        assert not allowed(documents, action, f"{b['uploads']}/uploads/images/original/a.jpg"), action
    assert not allowed(documents, "s3:PutObject", f"{b['backup']}/uploads/images/original/a.jpg")
    assert not allowed(documents, "cloudfront:CreateInvalidation", "arn:aws:cloudfront::1:distribution/E1")
    assert not allowed(documents, "sqs:SendMessage", "arn:aws:sqs:eu-west-1:1:q")


def test_the_job_role_is_for_batch_operations_of_this_account_and_invokes_only_the_backfill_function(stack):
    name, deployment = stack
    roles = {r.name: r for r in deployment.of_type("aws:iam/role:Role")}
    trust = json.loads(roles["backfill-job-role"].inputs["assumeRolePolicy"])["Statement"]
    assert trust == [{"Effect": "Allow", "Principal": {"Service": "batchoperations.s3.amazonaws.com"},
                      "Action": "sts:AssumeRole", "Condition": {"StringEquals": {"aws:SourceAccount": ACCOUNT}}}]
    functions = {r.inputs["name"]: r.outputs["arn"] for r in deployment.of_type(FUNCTION)}
    b = {role: f"arn:aws:s3:::{bucket['bucket']}" for role, bucket in buckets(deployment).items()}
    documents = role_policy(deployment, "backfill-job-role-0a1b2c")
    assert allowed(documents, "lambda:InvokeFunction", functions[f"image-pipeline-{name}-backfill"])
    assert not allowed(documents, "lambda:InvokeFunction", functions[f"image-pipeline-{name}-resize"])
    assert allowed(documents, "s3:GetObject", f"{b['backfill']}/backfill/manifests/20260101-x.csv")
    assert allowed(documents, "s3:PutObject", f"{b['backfill']}/backfill/reports/job-1/manifest.json")
    assert not allowed(documents, "s3:PutObject", f"{b['processed']}/uploads/images/og/a.jpg")
    assert not allowed(documents, "s3:GetObject", f"{b['uploads']}/uploads/images/original/a.jpg")
    assert not allowed(documents, "s3:PutObject", f"{b['uploads']}/uploads/images/original/a.jpg")
    (listing,) = [s for s in documents if s.get("Sid") == "ListOriginalsForTheManifestGenerator"]
    assert listing["Resource"] == b["uploads"] and listing["Condition"]["StringLike"]["s3:prefix"]


def test_job_manifests_and_reports_expire_from_a_private_bucket(stack):
    _, deployment = stack
    jobs = buckets(deployment)["backfill"]["bucket"]
    (lifecycle,) = [r.inputs for r in deployment.of_type("aws:s3/bucketLifecycleConfiguration:BucketLifecycleConfiguration")
                    if r.inputs["bucket"] == jobs]
    (rule,) = lifecycle["rules"]
    assert rule["filter"] == {"prefix": "backfill/"} and rule["expiration"] == {"days": 30}


def test_outputs_name_what_the_backfill_command_reads(stack):
    name, deployment = stack
    exports = deployment.exports
    from pipeline.backfill.command import STACK_OUTPUTS

    assert set(STACK_OUTPUTS.values()) <= set(exports)
    assert exports["backfillFunction"] == f"image-pipeline-{name}-backfill"
    assert exports["backfillRoleArn"].startswith(f"arn:aws:iam::{ACCOUNT}:role/")
    assert json.loads(exports["pipelineConfig"])["plugins"]["webp"]["enabled"] is True
    assert exports["backfillBucket"] == buckets(deployment)["backfill"]["bucket"]


def test_the_guardrail_catches_a_job_role_that_may_invoke_anything_or_write_the_trigger_bucket():
    trust = json.dumps({"Statement": [{"Effect": "Allow", "Principal": {"Service": "batchoperations.s3.amazonaws.com"},
                                       "Action": "sts:AssumeRole"}]})
    role = Resource(rules.ROLE, "job", {"assumeRolePolicy": trust, "arn": "arn:aws:iam::1:role/job", "name": "job"})
    bucket = Resource(rules.BUCKET, "uploads", {"bucket": "uploads-x", "id": "uploads-x"})
    notification = Resource(rules.NOTIFICATION, "n", {"bucket": "uploads-x"})

    def policy(*statement):
        return Resource(rules.ROLE_POLICY, "p", {"role": "job", "policy": json.dumps({"Statement": list(statement)})})

    good = policy({"Effect": "Allow", "Action": "lambda:InvokeFunction",
                   "Resource": "arn:aws:lambda:eu-west-1:1:function:backfill"})
    assert rules.batch_job_roles_are_scoped([role, bucket, notification, good]) == []
    versions = policy({"Effect": "Allow", "Action": "lambda:InvokeFunction",
                       "Resource": ["arn:aws:lambda:eu-west-1:1:function:backfill", "arn:aws:lambda:eu-west-1:1:function:backfill:*"]})
    assert rules.batch_job_roles_are_scoped([role, bucket, notification, versions]) == []
    for statement in ({"Effect": "Allow", "Action": "lambda:InvokeFunction", "Resource": "*"},
                      {"Effect": "Allow", "Action": "Lambda:*", "Resource": "arn:aws:lambda:eu-west-1:1:function:back*"},
                      {"Effect": "Allow", "NotAction": "iam:*", "Resource": "arn:aws:lambda:*:1:function:backfill"},
                      {"Effect": "Allow", "Action": "lambda:InvokeFunction", "NotResource": "arn:aws:lambda:eu-west-1:1:function:x"}):
        found = rules.batch_job_roles_are_scoped([role, bucket, notification, policy(statement)])
        assert found and "batch job role job may invoke functions it does not name" in found[0], statement
    writes = policy({"Effect": "Allow", "Action": "s3:PutObject", "Resource": "arn:aws:s3:::uploads-x/*"})
    assert "batch job role job may s3:PutObject into uploads" in rules.batch_job_roles_are_scoped(
        [role, bucket, notification, writes])[0]
    assert any(r.name == "batch-job-roles-are-scoped" for r in rules.RULES)
