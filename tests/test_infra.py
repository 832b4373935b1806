"""The Pulumi program, run for real under mocks for both stack files, asserted resource by resource."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections import Counter
from dataclasses import dataclass

import pytest

from pulumi_harness import (ACCOUNT, CACHE_POLICY_ID, DEPLOYER_ARN, DISTRIBUTION_ID, KEY_GROUP_ID, ORIGINALS_KEY_ID,
                            ORIGINALS_PRIVATE_KEY, ORIGINALS_PUBLIC_KEY, ROOT, Registered, deploy)

S3 = "aws:s3/"
BUCKET = "aws:s3/bucket:Bucket"


@pytest.fixture(scope="module", params=["dev", "prod"])
def stack(request):
    return request.param, deploy(request.param)


def buckets(deployment) -> dict[str, dict]:
    return {r.outputs["tags"]["pipeline:role"]: r.outputs for r in deployment.of_type(BUCKET)}


def attached(deployment, token: str, bucket_name: str) -> list[dict]:
    return [r.inputs for r in deployment.of_type(token) if r.inputs.get("bucket") == bucket_name]


def statements(policy: str | dict) -> list[dict]:
    document = json.loads(policy) if isinstance(policy, str) else policy
    return document["Statement"]


def as_list(value) -> list:
    return value if isinstance(value, list) else [value]


def test_resource_counts(stack):
    name, deployment = stack
    counts = Counter(r.type for r in deployment.resources)
    expected = {
        BUCKET: 4, f"{S3}bucketPublicAccessBlock:BucketPublicAccessBlock": 4,
        f"{S3}bucketOwnershipControls:BucketOwnershipControls": 4,
        f"{S3}bucketServerSideEncryptionConfiguration:BucketServerSideEncryptionConfiguration": 4,
        f"{S3}bucketPolicy:BucketPolicy": 4, f"{S3}bucketCorsConfiguration:BucketCorsConfiguration": 2,
        f"{S3}bucketVersioning:BucketVersioning": 2, f"{S3}bucketObjectLockConfiguration:BucketObjectLockConfiguration": 1,
        f"{S3}bucketLifecycleConfiguration:BucketLifecycleConfiguration": 4, f"{S3}bucketNotification:BucketNotification": 1,
        "aws:sns/topic:Topic": 2 if name == "prod" else 1, "aws:sns/topicPolicy:TopicPolicy": 1,
        "aws:sns/topicSubscription:TopicSubscription": 3 if name == "prod" else 2,
        "aws:lambda/function:Function": 3, "aws:lambda/layerVersion:LayerVersion": 1,
        "aws:lambda/permission:Permission": 2, "aws:lambda/functionEventInvokeConfig:FunctionEventInvokeConfig": 2,
        "aws:iam/role:Role": 4, "aws:iam/rolePolicy:RolePolicy": 7, "aws:iam/policy:Policy": 1,
        "aws:cloudwatch/logGroup:LogGroup": 3,
        "aws:sqs/queue:Queue": 1, "aws:cloudwatch/metricAlarm:MetricAlarm": 3,
        "aws:cloudfront/distribution:Distribution": 1, "aws:cloudfront/originAccessControl:OriginAccessControl": 1,
        "aws:cloudfront/responseHeadersPolicy:ResponseHeadersPolicy": 1,
        "aws:cloudfront/cachePolicy:CachePolicy": 1, "aws:cloudfront/function:Function": 3,
    }
    if name == "prod":  # originals: signed
        expected |= {"aws:cloudfront/publicKey:PublicKey": 1, "aws:cloudfront/keyGroup:KeyGroup": 1}
    assert {t: c for t, c in counts.items() if t.startswith("aws:")} == expected
    assert counts["imagepipeline:index:ImagePipeline"] == 1


def test_every_bucket_blocks_public_access_enforces_ownership_encrypts_and_requires_tls(stack):
    _, deployment = stack
    for role, bucket in buckets(deployment).items():
        name = bucket["bucket"]
        (block,) = attached(deployment, f"{S3}bucketPublicAccessBlock:BucketPublicAccessBlock", name)
        assert all(block[k] is True for k in ("blockPublicAcls", "blockPublicPolicy", "ignorePublicAcls",
                                              "restrictPublicBuckets")), role
        (ownership,) = attached(deployment, f"{S3}bucketOwnershipControls:BucketOwnershipControls", name)
        assert ownership["rule"]["objectOwnership"] == "BucketOwnerEnforced"
        (encryption,) = attached(deployment, f"{S3}bucketServerSideEncryptionConfiguration:"
                                             "BucketServerSideEncryptionConfiguration", name)
        assert encryption["rules"][0]["applyServerSideEncryptionByDefault"]["sseAlgorithm"] == "AES256"
        (policy,) = attached(deployment, f"{S3}bucketPolicy:BucketPolicy", name)
        tls = [s for s in statements(policy["policy"]) if s["Effect"] == "Deny"
               and s.get("Condition", {}).get("Bool", {}).get("aws:SecureTransport") == "false"]
        assert len(tls) == 1 and tls[0]["Principal"] == "*" and tls[0]["Action"] == "s3:*"
        assert set(tls[0]["Resource"]) == {f"arn:aws:s3:::{name}", f"arn:aws:s3:::{name}/*"}


def test_backup_has_versioning_object_lock_retention_deletion_deny_and_lifecycle(stack):
    name, deployment = stack
    backup = buckets(deployment)["backup"]
    assert backup["objectLockEnabled"] is True
    (versioning,) = attached(deployment, f"{S3}bucketVersioning:BucketVersioning", backup["bucket"])
    assert versioning["versioningConfiguration"]["status"] == "Enabled"
    (lock,) = attached(deployment, f"{S3}bucketObjectLockConfiguration:BucketObjectLockConfiguration", backup["bucket"])
    retention = lock["rule"]["defaultRetention"]
    assert (retention["mode"], retention["days"]) == (("COMPLIANCE", 365) if name == "prod" else ("GOVERNANCE", 7))
    (policy,) = attached(deployment, f"{S3}bucketPolicy:BucketPolicy", backup["bucket"])
    (deny,) = [s for s in statements(policy["policy"]) if s["Sid"] == "DenyDeletionAndUnlocking"]
    assert deny["Effect"] == "Deny" and deny["Principal"] == "*" and "Condition" not in deny
    assert {"s3:DeleteObject", "s3:DeleteObjectVersion", "s3:PutObjectRetention", "s3:BypassGovernanceRetention",
            "s3:DeleteBucket"} <= set(deny["Action"])
    # settings are the deployer's to change: see test_the_backup_policy_* below
    assert not any(a.startswith("s3:PutBucket") or a == "s3:PutLifecycleConfiguration" for a in deny["Action"])
    (lifecycle,) = attached(deployment, f"{S3}bucketLifecycleConfiguration:BucketLifecycleConfiguration", backup["bucket"])
    rule = lifecycle["rules"][0]
    assert rule["status"] == "Enabled" and rule["transitions"][0]["storageClass"] == "GLACIER_IR"
    assert rule["noncurrentVersionTransitions"][0]["storageClass"] == "GLACIER_IR"


def test_uploads_are_versioned_and_previous_versions_expire(stack):
    _, deployment = stack
    uploads = buckets(deployment)["uploads"]["bucket"]
    (versioning,) = attached(deployment, f"{S3}bucketVersioning:BucketVersioning", uploads)
    assert versioning["versioningConfiguration"]["status"] == "Enabled"
    (lifecycle,) = attached(deployment, f"{S3}bucketLifecycleConfiguration:BucketLifecycleConfiguration", uploads)
    rules = {rule["id"]: rule for rule in lifecycle["rules"]}
    assert all(rule["status"] == "Enabled" for rule in rules.values())
    assert rules["abort-incomplete-uploads"]["abortIncompleteMultipartUpload"] == {"daysAfterInitiation": 7}
    previous = rules["expire-previous-originals"]
    assert previous["filter"] == {} and previous["noncurrentVersionExpiration"] == {"noncurrentDays": 30}
    assert previous["expiration"] == {"expiredObjectDeleteMarker": True}


def test_tombstone_manifests_expire_from_the_processed_bucket(stack):
    from pipeline.caching import TOMBSTONE_TAG

    _, deployment = stack
    processed = buckets(deployment)["processed"]["bucket"]
    (lifecycle,) = attached(deployment, f"{S3}bucketLifecycleConfiguration:BucketLifecycleConfiguration", processed)
    (rule,) = lifecycle["rules"]
    assert rule["status"] == "Enabled" and rule["expiration"] == {"days": 7}
    assert rule["filter"] == {"tag": {"key": TOMBSTONE_TAG[0], "value": TOMBSTONE_TAG[1]}}
    assert TOMBSTONE_TAG == ("image-pipeline", "tombstone")


def test_lifecycle_days_come_from_the_stack_config():
    deployment = deploy("dev", {"uploadsNoncurrentVersionDays": "3", "tombstoneDays": "2"})
    b = buckets(deployment)
    (uploads,) = attached(deployment, f"{S3}bucketLifecycleConfiguration:BucketLifecycleConfiguration",
                          b["uploads"]["bucket"])
    (previous,) = [r for r in uploads["rules"] if r["id"] == "expire-previous-originals"]
    assert previous["noncurrentVersionExpiration"] == {"noncurrentDays": 3}
    (processed,) = attached(deployment, f"{S3}bucketLifecycleConfiguration:BucketLifecycleConfiguration",
                            b["processed"]["bucket"])
    assert processed["rules"][0]["expiration"] == {"days": 2}


@pytest.mark.parametrize("key", ["uploadsNoncurrentVersionDays", "tombstoneDays"])
def test_lifecycle_days_below_one_are_refused(key):
    from pipeline.config import ConfigError

    with pytest.raises(ConfigError, match=f"'{key}' must be at least 1"):
        deploy("dev", {key: "0"})


CORS = f"{S3}bucketCorsConfiguration:BucketCorsConfiguration"


def cdn_cors(deployment) -> dict | None:
    (headers,) = deployment.of_type("aws:cloudfront/responseHeadersPolicy:ResponseHeadersPolicy")
    return headers.inputs.get("corsConfig")


def test_no_cors_configuration_anywhere_by_default():
    deployment = deploy("fresh")  # a new stack: Pulumi.yaml's defaults and nothing else
    assert deployment.of_type(CORS) == [] and cdn_cors(deployment) is None


def test_with_origins_browsers_may_post_uploads_and_read_the_cdn_from_those_origins_only():
    origins = ["https://app.example.org", "https://*.example.net", "http://localhost:3000"]
    deployment = deploy("dev", {"corsOrigins": json.dumps(origins)})
    b = buckets(deployment)
    (uploads,) = attached(deployment, CORS, b["uploads"]["bucket"])
    assert uploads["corsRules"] == [{"allowedMethods": ["POST"], "allowedOrigins": origins,
                                     "exposeHeaders": ["ETag"], "maxAgeSeconds": 3600}]
    (processed,) = attached(deployment, CORS, b["processed"]["bucket"])
    assert [(r["allowedMethods"], r["allowedOrigins"]) for r in processed["corsRules"]] == [(["GET", "HEAD"], origins)]
    cors = cdn_cors(deployment)
    assert cors["accessControlAllowOrigins"] == {"items": origins}
    assert cors["accessControlAllowMethods"] == {"items": ["GET", "HEAD"]}
    assert cors["accessControlAllowCredentials"] is False


def test_when_only_servers_upload_the_uploads_bucket_has_no_cors():
    deployment = deploy("dev", {"browserUploads": "false"})
    b = buckets(deployment)
    assert attached(deployment, CORS, b["uploads"]["bucket"]) == []
    assert attached(deployment, CORS, b["processed"]["bucket"]) and cdn_cors(deployment)


@pytest.mark.parametrize("origin", ["*", "https://app.example.org/", "app.example.org", "https://app.example.org/upload",
                                    "ftp://app.example.org", "https://app.*.example.org"])
def test_what_is_not_an_origin_is_refused(origin):
    from pipeline.config import ConfigError

    with pytest.raises(ConfigError, match=f"'corsOrigins': {re.escape(repr(origin))} is not an origin"):
        deploy("dev", {"corsOrigins": json.dumps([origin])})


def test_notification_filter_and_topic_policy(stack):
    _, deployment = stack
    uploads = buckets(deployment)["uploads"]
    (topic,) = [r.outputs for r in deployment.of_type("aws:sns/topic:Topic") if r.name == "events-topic"]
    (notification,) = deployment.of_type(f"{S3}bucketNotification:BucketNotification")
    assert notification.inputs["bucket"] == uploads["bucket"]
    (target,) = notification.inputs["topics"]
    assert target == {"topicArn": topic["arn"], "events": ["s3:ObjectCreated:*", "s3:ObjectRemoved:*"],
                      "filterPrefix": "uploads/images/original/"}
    (policy,) = deployment.of_type("aws:sns/topicPolicy:TopicPolicy")
    (statement,) = statements(policy.inputs["policy"])
    assert statement["Principal"] == {"Service": "s3.amazonaws.com"} and statement["Action"] == "SNS:Publish"
    assert statement["Resource"] == topic["arn"]
    assert statement["Condition"] == {"ArnLike": {"aws:SourceArn": uploads["arn"]},
                                      "StringEquals": {"aws:SourceAccount": ACCOUNT}}


def role_documents(deployment, role: str) -> list[dict]:
    return [s for r in deployment.of_type("aws:iam/rolePolicy:RolePolicy")
            if r.inputs["role"] == f"functions-{role}-role-0a1b2c" for s in statements(r.inputs["policy"])]


def allowed(documents: list[dict], action: str, resource: str) -> bool:
    """Does any Allow grant `action` on `resource` (with IAM's wildcards) and no Deny refuse it?"""
    from fnmatch import fnmatchcase

    def matches(statement):
        return (any(fnmatchcase(action, a) for a in as_list(statement["Action"]))
                and any(fnmatchcase(resource, r) for r in as_list(statement["Resource"])))

    return (any(s["Effect"] == "Allow" and matches(s) for s in documents)
            and not any(s["Effect"] == "Deny" and matches(s) for s in documents))


def test_each_role_has_exactly_its_actions_and_resources(stack):
    _, deployment = stack
    b = {role: f"arn:aws:s3:::{bucket['bucket']}" for role, bucket in buckets(deployment).items()}
    resize = {s["Sid"]: (s["Effect"], as_list(s["Action"]), as_list(s["Resource"]))
              for s in role_documents(deployment, "resize") if s["Sid"] in
              ("ReadOriginals", "WriteVariations", "TellMissingFromForbidden")}
    assert resize == {
        "ReadOriginals": ("Allow", ["s3:GetObject"], [f"{b['uploads']}/uploads/images/original/*"]),
        "WriteVariations": ("Allow", ["s3:GetObject", "s3:PutObject", "s3:PutObjectTagging", "s3:DeleteObject"],
                            [f"{b['processed']}/uploads/images/*"]),
        "TellMissingFromForbidden": ("Allow", ["s3:ListBucket"], [b["uploads"], b["processed"]]),
    }
    backup = {s["Sid"]: (s["Effect"], as_list(s["Action"]), as_list(s["Resource"]))
              for s in role_documents(deployment, "backup")
              if s["Sid"] in ("ReadOriginals", "PutBackups", "ReadBackupVersions", "ListBackupVersions")}
    assert backup == {
        "ReadOriginals": ("Allow", ["s3:GetObject", "s3:GetObjectVersion", "s3:GetObjectTagging",
                                    "s3:GetObjectVersionTagging"], [f"{b['uploads']}/uploads/images/original/*"]),
        "PutBackups": ("Allow", ["s3:GetObject", "s3:PutObject", "s3:PutObjectTagging"],
                       [f"{b['backup']}/uploads/images/original/*"]),
        "ReadBackupVersions": ("Allow", ["s3:GetObjectVersion"], [f"{b['backup']}/uploads/images/original/*"]),
        "ListBackupVersions": ("Allow", ["s3:ListBucketVersions"], [b["backup"]]),
    }
    for role in ("resize", "backup"):
        documents = role_documents(deployment, role)
        assert not any(s["Effect"] == "Allow" and ("*" in as_list(s["Resource"]) or "s3:*" in as_list(s["Action"]))
                       for s in documents)
        for action in ("s3:PutObject", "s3:DeleteObject", "s3:DeleteObjectVersion"):
            assert not allowed(documents, action, f"{b['uploads']}/uploads/images/original/photo.jpg"), (role, action)
        for action in ("s3:DeleteObject", "s3:DeleteObjectVersion", "s3:PutObjectRetention", "s3:BypassGovernanceRetention"):
            assert not allowed(documents, action, f"{b['backup']}/uploads/images/original/photo.jpg"), (role, action)
    assert allowed(role_documents(deployment, "resize"), "s3:PutObject", f"{b['processed']}/uploads/images/large/p.jpg")
    assert not allowed(role_documents(deployment, "resize"), "s3:PutObject", f"{b['backup']}/uploads/images/original/p.jpg")
    assert allowed(role_documents(deployment, "backup"), "s3:PutObject", f"{b['backup']}/uploads/images/original/p.jpg")


def test_backup_may_copy_exactly_the_version_an_event_names_and_list_its_own_versions(stack):
    _, deployment = stack
    b = {role: f"arn:aws:s3:::{bucket['bucket']}" for role, bucket in buckets(deployment).items()}
    backup = role_documents(deployment, "backup")
    original = f"{b['uploads']}/uploads/images/original/2026/IMG_0042.HEIC"
    for action in ("s3:GetObjectVersion", "s3:GetObjectVersionTagging"):
        assert allowed(backup, action, original), action
    assert allowed(backup, "s3:ListBucketVersions", b["backup"])
    assert allowed(backup, "s3:GetObjectVersion", f"{b['backup']}/uploads/images/original/2026/IMG_0042.HEIC")
    assert not allowed(backup, "s3:ListBucketVersions", b["uploads"])
    assert not allowed(backup, "s3:GetObjectVersion", f"{b['processed']}/uploads/images/large/2026/IMG_0042.HEIC")


def test_resize_may_invalidate_exactly_this_distribution(stack):
    _, deployment = stack
    (distribution,) = deployment.of_type("aws:cloudfront/distribution:Distribution")
    arn = distribution.outputs["arn"]
    assert arn == f"arn:aws:cloudfront::{ACCOUNT}:distribution/{DISTRIBUTION_ID}"
    resize = role_documents(deployment, "resize")
    (statement,) = [s for s in resize if "cloudfront:CreateInvalidation" in as_list(s["Action"])]
    assert statement == {"Sid": "InvalidateChangedPaths", "Effect": "Allow", "Action": "cloudfront:CreateInvalidation",
                         "Resource": arn}
    assert not allowed(resize, "cloudfront:CreateInvalidation", f"arn:aws:cloudfront::{ACCOUNT}:distribution/EOTHER")
    assert not any("cloudfront:" in str(s["Action"]) for s in role_documents(deployment, "backup"))


def test_resize_may_tag_processed_images_only(stack):
    _, deployment = stack
    b = {role: f"arn:aws:s3:::{bucket['bucket']}" for role, bucket in buckets(deployment).items()}
    resize = role_documents(deployment, "resize")
    assert allowed(resize, "s3:PutObjectTagging", f"{b['processed']}/uploads/images/manifest/2026/IMG_0042.HEIC.json")
    assert not allowed(resize, "s3:PutObjectTagging", f"{b['uploads']}/uploads/images/original/2026/IMG_0042.HEIC")
    assert not allowed(resize, "s3:PutObjectTagging", f"{b['backup']}/uploads/images/original/2026/IMG_0042.HEIC")
    assert not allowed(role_documents(deployment, "backup"), "s3:PutObject", f"{b['processed']}/uploads/images/large/p.jpg")


def test_an_app_backend_may_sign_uploads_of_originals_and_nothing_else(stack):
    _, deployment = stack
    b = {role: f"arn:aws:s3:::{bucket['bucket']}" for role, bucket in buckets(deployment).items()}
    (policy,) = deployment.of_type("aws:iam/policy:Policy")
    assert statements(policy.inputs["policy"]) == [{
        "Sid": "SignUploadsOfOriginals", "Effect": "Allow", "Action": "s3:PutObject",
        "Resource": f"{b['uploads']}/uploads/images/original/*"}]
    documents = statements(policy.inputs["policy"])
    assert allowed(documents, "s3:PutObject", f"{b['uploads']}/uploads/images/original/2026/IMG_0042.HEIC")
    for action, resource in (("s3:PutObject", f"{b['uploads']}/uploads/images/large/p.jpg"),
                             ("s3:PutObject", f"{b['uploads']}/p.jpg"),
                             ("s3:PutObject", f"{b['processed']}/uploads/images/original/p.jpg"),
                             ("s3:GetObject", f"{b['uploads']}/uploads/images/original/p.jpg"),
                             ("s3:DeleteObject", f"{b['uploads']}/uploads/images/original/p.jpg"),
                             ("s3:PutObjectAcl", f"{b['uploads']}/uploads/images/original/p.jpg")):
        assert not allowed(documents, action, resource), (action, resource)
    exports = deployment.exports
    assert exports["uploaderPolicyArn"] == policy.outputs["arn"]
    assert (exports["uploadsBucket"], exports["uploadPrefix"], exports["uploadMaxBytes"]) == (
        buckets(deployment)["uploads"]["bucket"], "uploads/images/original/", 50 * 2**20)
    # without uploaderRoleTrust no role is made for it: the backend attaches the policy to its own
    assert "uploaderRoleArn" not in exports and not deployment.of_type("aws:iam/rolePolicyAttachment:RolePolicyAttachment")


def test_a_named_principal_gets_a_role_that_may_sign_uploads():
    backend = "arn:aws:iam::210987654321:role/app-backend"
    deployment = deploy("dev", {"uploaderRoleTrust": backend, "pipeline": json.dumps({"max_bytes": 20_000_000})})
    (policy,) = deployment.of_type("aws:iam/policy:Policy")
    (role,) = [r for r in deployment.of_type("aws:iam/role:Role") if r.name == "uploader-role"]
    assert statements(role.inputs["assumeRolePolicy"]) == [
        {"Effect": "Allow", "Principal": {"AWS": backend}, "Action": "sts:AssumeRole"}]
    (attachment,) = deployment.of_type("aws:iam/rolePolicyAttachment:RolePolicyAttachment")
    assert (attachment.inputs["role"], attachment.inputs["policyArn"]) == (role.outputs["name"], policy.outputs["arn"])
    assert deployment.exports["uploaderRoleArn"] == role.outputs["arn"]
    assert deployment.exports["uploadMaxBytes"] == 20_000_000


@pytest.mark.parametrize("trust", ["210987654321", "app-backend", "arn:aws:iam::2109876543:role/x",
                                   "arn:aws:s3:::uploads", "arn:aws:iam::210987654321:group/devs"])
def test_a_trust_that_is_no_principal_arn_is_refused(trust):
    from pipeline.config import ConfigError

    with pytest.raises(ConfigError, match="'uploaderRoleTrust'.* is not an AWS principal ARN"):
        deploy("dev", {"uploaderRoleTrust": trust})


def test_functions_runtime_memory_environment_and_artifact(stack):
    name, deployment = stack
    functions = {r.inputs["name"]: r.inputs for r in deployment.of_type("aws:lambda/function:Function")}
    resize, backup = functions[f"image-pipeline-{name}-resize"], functions[f"image-pipeline-{name}-backup"]
    assert resize["handler"] == "pipeline.handlers.resize_handler"
    assert backup["handler"] == "pipeline.handlers.backup_handler"
    for function in (resize, backup):
        assert function["runtime"] == "python3.12" and function["architectures"] == ["arm64"]
        assert function["reservedConcurrentExecutions"] == (50 if name == "prod" else -1)
    assert resize["memorySize"] == 1769 and backup["memorySize"] == 256
    b = {role: bucket["bucket"] for role, bucket in buckets(deployment).items()}
    assert resize["environment"]["variables"]["PROCESSED_BUCKET"] == b["processed"]
    assert resize["environment"]["variables"]["CDN_DISTRIBUTION_ID"] == DISTRIBUTION_ID  # the distribution's id
    assert "CDN_DISTRIBUTION_ID" not in backup["environment"]["variables"]
    # Render threads in one malloc arena: freed image buffers are reused, not kept in an arena per thread.
    assert resize["environment"]["variables"]["MALLOC_ARENA_MAX"] == "1"
    assert backup["environment"]["variables"]["BACKUP_BUCKET"] == b["backup"]
    for function in (resize, backup):  # the handlers act on records of this bucket only
        assert function["environment"]["variables"]["UPLOADS_BUCKET"] == b["uploads"]
    pipeline_config = json.loads(resize["environment"]["variables"]["PIPELINE_CONFIG"])
    assert pipeline_config["plugins"]["webp"]["enabled"] is True
    assert ("watermark" in pipeline_config["plugins"]) == (name == "prod")
    (layer,) = deployment.of_type("aws:lambda/layerVersion:LayerVersion")
    assert layer.inputs["compatibleArchitectures"] == ["arm64"] and layer.inputs["compatibleRuntimes"] == ["python3.12"]
    logs = {r.inputs["name"]: r.inputs for r in deployment.of_type("aws:cloudwatch/logGroup:LogGroup")}
    assert logs[f"/aws/lambda/image-pipeline-{name}-resize"]["retentionInDays"] == (365 if name == "prod" else 14)


def test_subscriptions_and_permissions_are_scoped_to_the_topic(stack):
    _, deployment = stack
    (topic,) = [r.outputs for r in deployment.of_type("aws:sns/topic:Topic") if r.name == "events-topic"]
    functions = {r.outputs["name"]: r.outputs for r in deployment.of_type("aws:lambda/function:Function")
                 if not r.outputs["name"].endswith("-backfill")}  # invoked by S3 Batch Operations, not the topic
    subscriptions = [r.inputs for r in deployment.of_type("aws:sns/topicSubscription:TopicSubscription")
                     if r.inputs["protocol"] == "lambda"]
    assert sorted(s["endpoint"] for s in subscriptions) == sorted(f["arn"] for f in functions.values())
    assert all(s["topic"] == topic["arn"] for s in subscriptions)
    for permission in deployment.of_type("aws:lambda/permission:Permission"):
        assert permission.inputs["principal"] == "sns.amazonaws.com"
        assert permission.inputs["sourceArn"] == topic["arn"]
        assert permission.inputs["function"] in functions


def test_dead_letter_queue_retries_and_alarms(stack):
    name, deployment = stack
    (queue,) = deployment.of_type("aws:sqs/queue:Queue")
    assert queue.inputs["messageRetentionSeconds"] == 14 * 24 * 3600 and queue.inputs["sqsManagedSseEnabled"] is True
    for config in deployment.of_type("aws:lambda/functionEventInvokeConfig:FunctionEventInvokeConfig"):
        assert config.inputs["destinationConfig"]["onFailure"]["destination"] == queue.outputs["arn"]
        assert config.inputs["maximumRetryAttempts"] == 2 and config.inputs["maximumEventAgeInSeconds"] == 3600
    for role in ("resize", "backup"):
        runtime = [s for s in role_documents(deployment, role) if s["Sid"] == "FailedEventsToDeadLetters"]
        assert runtime == [{"Sid": "FailedEventsToDeadLetters", "Effect": "Allow", "Action": "sqs:SendMessage",
                            "Resource": queue.outputs["arn"]}]
    alarms = {r.name: r.inputs for r in deployment.of_type("aws:cloudwatch/metricAlarm:MetricAlarm")}
    dlq = alarms["functions-dead-letters-waiting"]
    assert dlq["namespace"] == "AWS/SQS" and dlq["metricName"] == "ApproximateNumberOfMessagesVisible"
    assert dlq["dimensions"] == {"QueueName": queue.outputs["name"]} and dlq["threshold"] == 1
    for role in ("resize", "backup"):
        errors = alarms[f"functions-{role}-errors"]
        assert errors["metricName"] == "Errors" and errors["dimensions"] == {"FunctionName": f"image-pipeline-{name}-{role}"}
    if name == "prod":
        (alarm_topic,) = [r.outputs for r in deployment.of_type("aws:sns/topic:Topic") if r.name == "functions-alarms"]
        assert all(a["alarmActions"] == [alarm_topic["arn"]] for a in alarms.values())
        (email,) = [r.inputs for r in deployment.of_type("aws:sns/topicSubscription:TopicSubscription")
                    if r.inputs["protocol"] == "email"]
        assert email["endpoint"] == "ops@example.com"
    else:
        assert all(not a.get("alarmActions") for a in alarms.values())


def test_cdn_origins_access_control_behaviours_and_https(stack):
    name, deployment = stack
    b = buckets(deployment)
    (distribution,) = deployment.of_type("aws:cloudfront/distribution:Distribution")
    (oac,) = deployment.of_type("aws:cloudfront/originAccessControl:OriginAccessControl")
    assert oac.inputs["originAccessControlOriginType"] == "s3" and oac.inputs["signingBehavior"] == "always"
    inputs = distribution.inputs
    origins = {o["originId"]: o for o in inputs["origins"]}
    assert origins["uploads"]["domainName"] == b["uploads"]["bucketRegionalDomainName"]
    assert origins["processed"]["domainName"] == b["processed"]["bucketRegionalDomainName"]
    assert all(o["originAccessControlId"] == "cdn-oac-id" and "s3OriginConfig" not in o for o in origins.values())
    behaviours = inputs["orderedCacheBehaviors"]
    assert [(x["pathPattern"], x["targetOriginId"]) for x in behaviours] == [
        ("/uploads/images/original/*", "uploads"), ("/uploads/images/*", "processed")]
    (headers,) = deployment.of_type("aws:cloudfront/responseHeadersPolicy:ResponseHeadersPolicy")
    for behaviour in behaviours + [inputs["defaultCacheBehavior"]]:
        assert behaviour["viewerProtocolPolicy"] == "redirect-to-https"
        assert behaviour["compress"] is True and behaviour["responseHeadersPolicyId"] == "cdn-headers-id"
    security = headers.inputs["securityHeadersConfig"]
    assert security["strictTransportSecurity"]["accessControlMaxAgeSec"] >= 31536000
    assert security["contentTypeOptions"]["override"] is True and security["frameOptions"]["frameOption"] == "DENY"
    assert inputs["priceClass"] == ("PriceClass_All" if name == "prod" else "PriceClass_100")
    assert inputs["viewerCertificate"] == {"cloudfrontDefaultCertificate": True}


def functions_by_name(deployment) -> dict[str, Registered]:
    return {r.name: r for r in deployment.of_type("aws:cloudfront/function:Function")}


def test_every_behaviour_keys_the_cache_on_v_only_and_sets_cache_control_on_the_way_out(stack):
    from infra.cdn import ORIGINALS_RESPONSE_CODE, VIEWER_RESPONSE_CODE
    from pipeline.caching import VERSIONED_CACHE

    _, deployment = stack
    (distribution,) = deployment.of_type("aws:cloudfront/distribution:Distribution")
    (policy,) = deployment.of_type("aws:cloudfront/cachePolicy:CachePolicy")
    functions = functions_by_name(deployment)
    originals, rest = functions["cdn-originals-response"], functions["cdn-cache-control"]
    originals_behaviour, images = distribution.inputs["orderedCacheBehaviors"]
    assert originals_behaviour["pathPattern"] == "/uploads/images/original/*"
    assert images["pathPattern"] == "/uploads/images/*"
    for behaviour, function in [(originals_behaviour, originals), (images, rest)]:
        assert behaviour["cachePolicyId"] == CACHE_POLICY_ID
        assert behaviour["functionAssociations"] == [{"eventType": "viewer-response",
                                                      "functionArn": function.outputs["arn"]}]
    # the default behaviour serves nothing: see test_no_path_outside_the_images_reaches_a_bucket
    assert distribution.inputs["defaultCacheBehavior"]["cachePolicyId"] == CACHE_POLICY_ID
    key = policy.inputs["parametersInCacheKeyAndForwardedToOrigin"]
    assert key["queryStringsConfig"] == {"queryStringBehavior": "whitelist", "queryStrings": {"items": ["v"]}}
    assert key["headersConfig"] == {"headerBehavior": "none"} and key["cookiesConfig"] == {"cookieBehavior": "none"}
    assert key["enableAcceptEncodingGzip"] is True and key["enableAcceptEncodingBrotli"] is True
    assert (policy.inputs["minTtl"], policy.inputs["defaultTtl"], policy.inputs["maxTtl"]) == (0, 120, 31536000)
    for function, code in ((originals, ORIGINALS_RESPONSE_CODE), (rest, VIEWER_RESPONSE_CODE)):
        assert function.inputs["runtime"] == "cloudfront-js-2.0" and function.inputs["publish"] is True
        assert function.inputs["code"] == code and VERSIONED_CACHE in code
    errors = {e["errorCode"]: e for e in distribution.inputs["customErrorResponses"]}
    assert set(errors) == {403, 404}
    assert all(e["errorCachingMinTtl"] <= 5 and "responseCode" not in e and "responsePagePath" not in e
               for e in errors.values())


def test_every_behaviour_sends_nosniff_and_a_csp_that_makes_a_document_inert(stack):
    _, deployment = stack
    (distribution,) = deployment.of_type("aws:cloudfront/distribution:Distribution")
    (headers,) = deployment.of_type("aws:cloudfront/responseHeadersPolicy:ResponseHeadersPolicy")
    behaviours = distribution.inputs["orderedCacheBehaviors"] + [distribution.inputs["defaultCacheBehavior"]]
    assert {b["responseHeadersPolicyId"] for b in behaviours} == {f"{headers.name}-id"}
    security = headers.inputs["securityHeadersConfig"]
    assert security["contentTypeOptions"] == {"override": True}  # X-Content-Type-Options: nosniff
    assert security["contentSecurityPolicy"] == {"contentSecurityPolicy": "default-src 'none'; sandbox",
                                                 "override": True}


def test_the_response_headers_policy_sends_what_security_headers_says(stack):
    """pipeline.caching.security_headers() is what the local CDN sends: the same as this policy."""
    from pipeline.caching import security_headers

    _, deployment = stack
    (headers,) = deployment.of_type("aws:cloudfront/responseHeadersPolicy:ResponseHeadersPolicy")
    security = headers.inputs["securityHeadersConfig"]
    assert all(entry["override"] is True for entry in security.values())
    hsts = security["strictTransportSecurity"]
    sent = {"strict-transport-security": f"max-age={int(hsts['accessControlMaxAgeSec'])}"
                                         + ("; includeSubDomains" if hsts["includeSubdomains"] else ""),
            "x-content-type-options": "nosniff",
            "content-security-policy": security["contentSecurityPolicy"]["contentSecurityPolicy"],
            "x-frame-options": security["frameOptions"]["frameOption"],
            "referrer-policy": security["referrerPolicy"]["referrerPolicy"]}
    assert set(security) == {"strictTransportSecurity", "contentTypeOptions", "contentSecurityPolicy",
                             "frameOptions", "referrerPolicy"}
    assert security_headers() == sent


METADATA = {"x-amz-meta-source-etag": "etag-1", "x-amz-meta-spec-hash": "spec-1"}


@pytest.mark.parametrize("version, origin, metadata, expected", [
    ("match", None, METADATA, "public, max-age=31536000, immutable"),
    ("match", "public, max-age=120", METADATA, "public, max-age=31536000, immutable"),
    ("0123456789ab", "public, max-age=120", METADATA, "public, max-age=120"),  # other bytes than v names
    ("match", "public, max-age=120", {}, "public, max-age=120"),  # bytes of no version (an original)
    (None, "public, max-age=60", METADATA, "public, max-age=60"),  # a manifest keeps its own
    (None, "no-store", {}, "no-store"),
    (None, None, {}, "public, max-age=120"),
    (None, "", {}, "public, max-age=120"),
])
def test_the_viewer_cache_control_rule(version, origin, metadata, expected):
    from pipeline.caching import url_version, viewer_cache_control

    if version == "match":
        version = url_version("etag-1", "spec-1")
    assert viewer_cache_control(version, origin, metadata.get("x-amz-meta-source-etag"),
                                metadata.get("x-amz-meta-spec-hash")) == expected


# Stored content types of originals, and whether the CDN serves each as itself.
CONTENT_TYPES = [
    ("image/jpeg", True), ("image/png", True), ("image/webp", True), ("image/gif", True), ("image/heic", True),
    ("image/heif", True), ("image/avif", True), ("IMAGE/JPEG", True), ("image/jpeg; charset=binary", True),
    (" image/png;q=1", True), ("\timage/avif", True),
    ("text/html", False), ("text/html; charset=utf-8", False), ("image/svg+xml", False), ("application/xml", False),
    ("application/octet-stream", False), ("binary/octet-stream", False), ("image/jpeg2000", False),
    ("image/jpegx", False), ("image/ jpeg", False), ("text/html, image/jpeg", False), ("", False), (None, False),
]


@pytest.mark.parametrize("content_type, served", CONTENT_TYPES)
def test_an_original_that_is_no_accepted_image_is_a_download(content_type, served):
    from pipeline.caching import original_download_headers, served_as_image

    assert served_as_image(content_type) is served
    expected = {} if served else {"content-type": "application/octet-stream", "content-disposition": "attachment"}
    assert original_download_headers(content_type) == expected


@pytest.mark.parametrize("code_name", ["VIEWER_RESPONSE_CODE", "ORIGINALS_RESPONSE_CODE"])
def test_the_function_code_is_made_of_exactly_the_shared_constants(code_name):
    import infra.cdn
    from pipeline.caching import (DOWNLOAD_CONTENT_TYPE, DOWNLOAD_DISPOSITION, ORIGINAL_IMAGE_TYPES, SOURCE_ETAG_HEADER,
                                  SPEC_HASH_HEADER, VARIATION_CACHE, VERSION_PARAMETER, VERSIONED_CACHE)

    code = getattr(infra.cdn, code_name)
    literals = re.findall(r'"((?:[^"\\]|\\.)*)"', code)
    # url_version's recipe: sha256 of "<source ETag>/<spec hash>", the first 12 hex digits
    expected = {"cache-control", VERSION_PARAMETER, VERSIONED_CACHE, VARIATION_CACHE, SOURCE_ETAG_HEADER,
                SPEC_HASH_HEADER, "crypto", "sha256", "/", "hex"}
    if code_name == "ORIGINALS_RESPONSE_CODE":
        expected |= {"content-type", "content-disposition", DOWNLOAD_CONTENT_TYPE, DOWNLOAD_DISPOSITION,
                     *ORIGINAL_IMAGE_TYPES}
    assert sorted(set(literals)) == sorted(expected)
    assert "'" not in code and "max-age" not in re.sub(r'"[^"]*"', "", code)
    assert len(code.encode()) < 2048  # CloudFront allows 10 KB; small is the point


def run_function(code: str, event: dict) -> dict:
    """What the function's handler returns for `event`, run by node."""
    script = f"{code}\nprocess.stdout.write(JSON.stringify(handler({json.dumps(event)})));"
    result = subprocess.run(["node", "-e", script], capture_output=True, text=True, timeout=30, check=True)
    return json.loads(result.stdout)


needs_node = pytest.mark.skipif(shutil.which("node") is None, reason="needs node to run the function's JavaScript")


@needs_node
@pytest.mark.parametrize("query", [
    {"v": {"value": "MATCH"}, "w": {"value": "1"}},
    {"v": {"value": "MATCH", "multiValue": [{"value": "MATCH"}, {"value": "0"}]}},
    {"v": {"value": "0123456789ab"}},  # a v the bytes answered are not
    {"w": {"value": "1"}},
    {"v": {"value": ""}},  # `?v=` names no version
    {},
])
@pytest.mark.parametrize("origin", [None, "", "public, max-age=60", "public, max-age=120"])
@pytest.mark.parametrize("metadata", [METADATA, {}])
@pytest.mark.parametrize("original", [False, True])
def test_the_function_applies_the_same_rule_as_python(query, origin, metadata, original):
    """CloudFront's runtime is not node, but this code uses nothing either lacks (crypto's sha256 included)."""
    from infra.cdn import ORIGINALS_RESPONSE_CODE, VIEWER_RESPONSE_CODE
    from pipeline.caching import url_version, viewer_response_headers

    query = json.loads(json.dumps(query).replace("MATCH", url_version("etag-1", "spec-1")))
    headers = {"content-type": "image/jpeg"} | metadata | ({} if origin is None else {"cache-control": origin})
    event = {"request": {"uri": "/uploads/images/original/a.jpg", "querystring": query},
             "response": {"statusCode": 200, "headers": {k: {"value": v} for k, v in headers.items()}}}
    response = run_function(ORIGINALS_RESPONSE_CODE if original else VIEWER_RESPONSE_CODE, event)
    assert response["statusCode"] == 200
    version = (query.get("v") or {}).get("value") or None
    expected = viewer_response_headers(headers, version=version, original=original)
    assert response["headers"] == {k: {"value": v} for k, v in expected.items()}
    if version == url_version("etag-1", "spec-1") and metadata:
        assert response["headers"]["cache-control"] == {"value": "public, max-age=31536000, immutable"}


@needs_node
def test_the_originals_function_and_python_agree_on_every_content_type():
    """One node run over every content type of CONTENT_TYPES, through both functions."""
    from infra.cdn import ORIGINALS_RESPONSE_CODE, VIEWER_RESPONSE_CODE
    from pipeline.caching import viewer_response_headers

    cases = [{} if t is None else {"content-type": t, "cache-control": "public, max-age=60"}
             for t, _ in CONTENT_TYPES]
    for code, original in ((ORIGINALS_RESPONSE_CODE, True), (VIEWER_RESPONSE_CODE, False)):
        events = [{"request": {"uri": "/x", "querystring": {}},
                   "response": {"statusCode": 200, "headers": {k: {"value": v} for k, v in c.items()}}}
                  for c in cases]
        script = (f"{code}\nprocess.stdout.write(JSON.stringify("
                  f"{json.dumps(events)}.map(function (e) {{ return handler(e).headers; }})));")
        result = subprocess.run(["node", "-e", script], capture_output=True, text=True, timeout=30, check=True)
        for headers, got in zip(cases, json.loads(result.stdout), strict=True):
            expected = viewer_response_headers(headers, version=None, original=original)
            assert got == {k: {"value": v} for k, v in expected.items()}, headers
            if original and headers.get("content-type") in ("text/html", "image/svg+xml"):
                assert got["content-disposition"] == {"value": "attachment"}


@needs_node
def test_a_private_originals_function_answers_403_before_any_origin():
    from infra.cdn import ORIGINALS_DENIED_CODE

    event = {"request": {"method": "GET", "uri": "/uploads/images/original/2026/IMG_0042.HEIC", "querystring": {},
                         "headers": {}, "cookies": {}}}
    assert run_function(ORIGINALS_DENIED_CODE, event) == {"statusCode": 403, "statusDescription": "Forbidden"}


# What reaches the default behaviour: every path that no ordered behaviour matches (CloudFront
# matches the normalized path, case-sensitively). `/` is the one S3 would answer with a listing.
NOT_SERVED_URIS = ["/", "/index.html", "/uploads/", "/uploads/images", "/Uploads/images/large/a.jpg",
                   "/processed/uploads/images/large/a.jpg", "/favicon.ico"]


@needs_node
@pytest.mark.parametrize("uri", NOT_SERVED_URIS)
@pytest.mark.parametrize("query", [{}, {"list-type": {"value": "2"}}, {"v": {"value": "1"}}])
def test_a_path_outside_the_images_is_answered_404_at_the_edge(uri, query):
    from infra.cdn import NOT_SERVED_CODE

    from pipeline.local.cdn import NOT_SERVED_STATUS, route

    event = {"request": {"method": "GET", "uri": uri, "querystring": query, "headers": {}, "cookies": {}}}
    assert run_function(NOT_SERVED_CODE, event) == {"statusCode": 404, "statusDescription": "Not Found"}
    assert route(uri) is None and NOT_SERVED_STATUS == 404  # and so the local CDN answers it


@pytest.mark.parametrize("overrides", [{}, {"originals": "private"},
                                       {"originals": "signed", "originalsPublicKey": ORIGINALS_PUBLIC_KEY}])
def test_no_path_outside_the_images_reaches_a_bucket(overrides):
    """The distribution may list the buckets it serves (for 404s), so no request may become a
    listing: S3 lists for `GET /` only (with a query string it would list however asked), and `/`
    is no path of the ordered behaviours, each of which lies under /uploads/images/."""
    from infra.cdn import NOT_SERVED_CODE

    deployment = deploy("dev", overrides)
    (distribution,) = deployment.of_type("aws:cloudfront/distribution:Distribution")
    ordered, default = distribution.inputs["orderedCacheBehaviors"], distribution.inputs["defaultCacheBehavior"]
    assert all(b["pathPattern"].startswith("/uploads/images/") for b in ordered)
    not_served = functions_by_name(deployment)["cdn-not-served"]
    assert not_served.inputs["code"] == NOT_SERVED_CODE and not_served.inputs["publish"] is True
    assert not_served.inputs["runtime"] == "cloudfront-js-2.0"
    # answered before the cache and any origin; no viewer-response function runs on it
    assert default["functionAssociations"] == [{"eventType": "viewer-request",
                                                "functionArn": not_served.outputs["arn"]}]
    assert "defaultRootObject" not in distribution.inputs  # `/` is asked for as itself, so the function has it
    # No query string but `v` reaches S3 (`?list-type=2`, `?prefix=`, `?versions` never do): the
    # cache policy forwards `v` alone and no behaviour adds an origin request policy.
    (policy,) = deployment.of_type("aws:cloudfront/cachePolicy:CachePolicy")
    forwarded = policy.inputs["parametersInCacheKeyAndForwardedToOrigin"]["queryStringsConfig"]
    assert forwarded == {"queryStringBehavior": "whitelist", "queryStrings": {"items": ["v"]}}
    for behaviour in ordered + [default]:
        assert behaviour["cachePolicyId"] == CACHE_POLICY_ID and "originRequestPolicyId" not in behaviour
    assert all("originPath" not in o for o in distribution.inputs["origins"])


def behaviours_of(deployment) -> tuple[dict, list[dict]]:
    """The originals' behaviour, and every other (the default last)."""
    (distribution,) = deployment.of_type("aws:cloudfront/distribution:Distribution")
    originals, *others = distribution.inputs["orderedCacheBehaviors"] + [distribution.inputs["defaultCacheBehavior"]]
    assert originals["pathPattern"] == "/uploads/images/original/*"
    return originals, others


def uploads_policy(deployment) -> list[dict]:
    (policy,) = attached(deployment, f"{S3}bucketPolicy:BucketPolicy", buckets(deployment)["uploads"]["bucket"])
    return statements(policy["policy"])


def test_public_originals_are_served_to_anyone_from_the_uploads_bucket():
    deployment = deploy("dev")
    originals, others = behaviours_of(deployment)
    assert originals["targetOriginId"] == "uploads" and "trustedKeyGroups" not in originals
    assert not any("trustedKeyGroups" in b for b in others)
    assert not deployment.of_type("aws:cloudfront/keyGroup:KeyGroup")
    assert not deployment.of_type("aws:cloudfront/publicKey:PublicKey")
    assert [s["Sid"] for s in uploads_policy(deployment) if s["Effect"] == "Allow"] == [
        "AllowCloudFrontReads", "AllowCloudFrontToTellMissingKeys"]
    assert deployment.exports["originals"] == "public" and "originalsKeyId" not in deployment.exports
    assert "original" in deployment.exports["urlPatterns"]


def test_signed_originals_need_a_url_signed_with_the_stacks_key():
    deployment = deploy("dev", {"originals": "signed", "originalsPublicKey": ORIGINALS_PUBLIC_KEY})
    (key,) = deployment.of_type("aws:cloudfront/publicKey:PublicKey")
    assert key.inputs["encodedKey"] == ORIGINALS_PUBLIC_KEY.strip() + "\n" and "name" not in key.inputs
    (group,) = deployment.of_type("aws:cloudfront/keyGroup:KeyGroup")
    assert group.inputs["items"] == [ORIGINALS_KEY_ID]
    originals, others = behaviours_of(deployment)
    assert originals["targetOriginId"] == "uploads" and originals["trustedKeyGroups"] == [KEY_GROUP_ID]
    assert not any("trustedKeyGroups" in b for b in others)  # variations and manifests stay public
    functions = functions_by_name(deployment)
    assert originals["functionAssociations"] == [{"eventType": "viewer-response",
                                                  "functionArn": functions["cdn-originals-response"].outputs["arn"]}]
    assert [s["Sid"] for s in uploads_policy(deployment) if s["Effect"] == "Allow"] == [
        "AllowCloudFrontReads", "AllowCloudFrontToTellMissingKeys"]
    assert deployment.exports["originals"] == "signed" and deployment.exports["originalsKeyId"] == ORIGINALS_KEY_ID
    assert "original" in deployment.exports["urlPatterns"]


def test_private_originals_never_leave_the_uploads_bucket_through_the_cdn():
    from infra.cdn import ORIGINALS_DENIED_CODE

    deployment = deploy("dev", {"originals": "private"})
    (distribution,) = deployment.of_type("aws:cloudfront/distribution:Distribution")
    assert [o["originId"] for o in distribution.inputs["origins"]] == ["processed"]
    assert not any(o["domainName"] == buckets(deployment)["uploads"]["bucketRegionalDomainName"]
                   for o in distribution.inputs["origins"])
    originals, others = behaviours_of(deployment)
    functions = functions_by_name(deployment)
    assert set(functions) == {"cdn-cache-control", "cdn-originals-denied", "cdn-not-served"}
    denied = functions["cdn-originals-denied"]
    assert denied.inputs["code"] == ORIGINALS_DENIED_CODE and denied.inputs["publish"] is True
    # its path never falls through to another behaviour: answered 403 before cache and origin
    assert originals["functionAssociations"] == [{"eventType": "viewer-request", "functionArn": denied.outputs["arn"]}]
    assert "trustedKeyGroups" not in originals and not deployment.of_type("aws:cloudfront/keyGroup:KeyGroup")
    assert all(b["targetOriginId"] == "processed" for b in others)
    assert others[-1]["functionAssociations"] == [{"eventType": "viewer-request",
                                                   "functionArn": functions["cdn-not-served"].outputs["arn"]}]
    # and the uploads bucket lets nobody read or list it, not even this distribution
    assert [s for s in uploads_policy(deployment) if s["Effect"] == "Allow"] == []
    assert deployment.exports["originals"] == "private" and "original" not in deployment.exports["urlPatterns"]


def test_signed_originals_without_a_key_stop_with_a_message_naming_it():
    from pipeline.config import ConfigError

    with pytest.raises(ConfigError, match="missing settings only a person can know") as stopped:
        deploy("dev", {"originals": "signed"})
    assert missing_keys(stopped.value) == ["originalsPublicKey"]


@pytest.mark.parametrize("overrides, message", [
    ({"originals": "hidden"}, "'originals' must be one of public, signed, private"),
    ({"originalsPublicKey": ORIGINALS_PUBLIC_KEY}, "'originalsPublicKey' is set but 'originals' is 'public'"),
    ({"originals": "signed", "originalsPublicKey": "ssh-rsa AAAAB3NzaC1yc2E"}, "must be a PEM public key"),
    ({"originals": "signed", "originalsPublicKey": ORIGINALS_PUBLIC_KEY.replace("PUBLIC", "RSA PRIVATE")},
     "must be a PEM public key"),
])
def test_originals_settings_that_cannot_work_are_refused(overrides, message):
    from pipeline.config import ConfigError

    with pytest.raises(ConfigError, match=re.escape(message)):
        deploy("dev", overrides)


def missing_keys(error: Exception) -> list[str]:
    """The keys a 'missing settings' message names, one per line."""
    return re.findall(r"^  (\w+): ", str(error), flags=re.MULTILINE)


# Settings only a person can know: no stack file may ship a value for them that someone made up.
HUMAN_KEYS = ("deployerArn", "alarmEmail", "corsOrigins", "domainName", "certificateArn", "originalsPublicKey",
              "uploaderRoleTrust")


@pytest.mark.parametrize("stack_name", ["dev", "prod"])
def test_no_stack_file_ships_a_placeholder_for_what_only_a_person_knows(stack_name):
    import yaml
    from pulumi_harness import ROOT

    values = yaml.safe_load((ROOT / f"Pulumi.{stack_name}.yaml").read_text())["config"]
    shipped = {key.split(":", 1)[1]: value for key, value in values.items() if key.split(":", 1)[1] in HUMAN_KEYS}
    assert not any("example." in str(value) for value in shipped.values()), shipped
    if stack_name == "prod":
        assert shipped == {} and values["image-pipeline:requireHumanSettings"] is True
        assert values["image-pipeline:originals"] == "signed"


def test_prod_without_what_only_a_person_knows_stops_with_one_message_naming_each():
    from pipeline.config import ConfigError

    with pytest.raises(ConfigError, match="stack 'prod' is missing settings only a person can know") as stopped:
        deploy("prod", set_by_a_person=False)
    assert missing_keys(stopped.value) == ["deployerArn", "alarmEmail", "corsOrigins", "originalsPublicKey"]
    assert "pulumi config set alarmEmail" in str(stopped.value)


@pytest.mark.parametrize("present, missing", [
    ({"alarmEmail": "ops@acme.test"}, ["deployerArn", "corsOrigins", "originalsPublicKey"]),
    ({"corsOrigins": json.dumps(["https://app.acme.test"])}, ["deployerArn", "alarmEmail", "originalsPublicKey"]),
    ({"browserUploads": "false"}, ["deployerArn", "alarmEmail", "originalsPublicKey"]),  # no browser uploads: no origins needed
    ({"originals": "private"}, ["deployerArn", "alarmEmail", "corsOrigins"]),
    ({"deployerArn": DEPLOYER_ARN}, ["alarmEmail", "corsOrigins", "originalsPublicKey"]),
    ({"protectData": "false"}, ["alarmEmail", "corsOrigins", "originalsPublicKey"]),  # unprotected: no deployer needed
])
def test_prod_names_exactly_what_is_still_missing(present, missing):
    from pipeline.config import ConfigError

    with pytest.raises(ConfigError) as stopped:
        deploy("prod", present, set_by_a_person=False)
    assert missing_keys(stopped.value) == missing


def test_prod_with_what_a_person_set_deploys_and_needs_no_domain():
    deployment = deploy("prod", {"deployerArn": DEPLOYER_ARN, "alarmEmail": "ops@acme.test",
                                 "corsOrigins": json.dumps(["https://app.acme.test"]),
                                 "originalsPublicKey": ORIGINALS_PUBLIC_KEY}, set_by_a_person=False)
    (email,) = [r.inputs for r in deployment.of_type("aws:sns/topicSubscription:TopicSubscription")
                if r.inputs["protocol"] == "email"]
    assert email["endpoint"] == "ops@acme.test"
    assert deployment.exports["cdnDomain"] == "d111111abcdef8.cloudfront.net"


@pytest.mark.parametrize("stack_name, overrides", [
    ("dev", {}),
    ("fresh", {"deployerArn": DEPLOYER_ARN}),  # a new stack keeps its data (protectData), so it names a deployer
    ("fresh", {"protectData": "false"}),  # or is a throw-away stack
])
def test_dev_and_a_new_stack_deploy_with_defaults(stack_name, overrides):
    deployment = deploy(stack_name, overrides, set_by_a_person=False)
    assert deployment.exports["originals"] == "public" and deployment.of_type("aws:cloudfront/distribution:Distribution")


def test_a_new_stack_with_nothing_set_stops_naming_only_the_deployer():
    from pipeline.config import ConfigError

    with pytest.raises(ConfigError, match="stack 'fresh' is missing settings only a person can know") as stopped:
        deploy("fresh", set_by_a_person=False)
    assert missing_keys(stopped.value) == ["deployerArn"]


def test_require_human_settings_is_a_stack_setting_not_a_stack_name():
    from pipeline.config import ConfigError

    with pytest.raises(ConfigError, match="stack 'dev' is missing") as stopped:
        deploy("dev", {"requireHumanSettings": "true", "corsOrigins": "[]"})
    assert missing_keys(stopped.value) == ["alarmEmail", "corsOrigins"]


def test_the_readmes_signed_url_is_one_the_stacks_key_verifies(tmp_path, monkeypatch):
    """The README's snippet, run as written, with prod's exported key id and the private half of
    the key pair whose public half prod was given."""
    import base64
    from urllib.parse import parse_qs, urlsplit

    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import padding

    privacy = (ROOT / "README.md").read_text().split("## Privacy", 1)[1]
    (snippet,) = [block for block in re.findall(r"```python\n(.*?)```", privacy, flags=re.DOTALL)
                  if "CloudFrontSigner" in block]
    (tmp_path / "originals-private.pem").write_bytes(ORIGINALS_PRIVATE_KEY.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()))
    monkeypatch.chdir(tmp_path)
    deployment = deploy("prod")
    exports = deployment.exports
    namespace = {"KEY_ID": exports["originalsKeyId"], "CDN_DOMAIN": exports["cdnDomain"]}
    exec(compile(snippet, "README.md", "exec"), namespace)

    url = urlsplit(namespace["url"])
    resource = f"https://{exports['cdnDomain']}/uploads/images/original/2026/IMG_0042.HEIC"
    assert f"{url.scheme}://{url.netloc}{url.path}" == resource
    query = {k: v for k, (v,) in parse_qs(url.query).items()}
    assert set(query) == {"Expires", "Signature", "Key-Pair-Id"} and query["Key-Pair-Id"] == ORIGINALS_KEY_ID
    # CloudFront's canned policy, and its URL-safe base64 (- for +, _ for =, ~ for /)
    policy = ('{"Statement":[{"Resource":"%s","Condition":{"DateLessThan":{"AWS:EpochTime":%s}}}]}'
              % (resource, query["Expires"])).encode()
    signature = base64.b64decode(query["Signature"].translate(str.maketrans("-_~", "+=/")))
    (key,) = deployment.of_type("aws:cloudfront/publicKey:PublicKey")  # the key CloudFront checks with
    public_key = serialization.load_pem_public_key(key.inputs["encodedKey"].encode())
    public_key.verify(signature, policy, padding.PKCS1v15(), hashes.SHA1())


def test_served_bucket_policies_let_only_this_distribution_read_and_tell_missing_keys(stack):
    """Each bucket the distribution serves (uploads: public and signed originals) lets this
    distribution, and no other, read what it serves and list the bucket: the list permission is
    what makes S3 answer 404 NoSuchKey, not 403 AccessDenied, for a key that does not exist."""
    from infra.policies import evaluate

    _, deployment = stack
    (distribution,) = deployment.of_type("aws:cloudfront/distribution:Distribution")
    this = {"AWS:SourceArn": distribution.outputs["arn"]}
    other = {"AWS:SourceArn": f"arn:aws:cloudfront::{ACCOUNT}:distribution/EOTHER"}
    for role, prefix in (("uploads", "uploads/images/original/*"), ("processed", "uploads/images/*")):
        bucket = buckets(deployment)[role]
        (policy,) = attached(deployment, f"{S3}bucketPolicy:BucketPolicy", bucket["bucket"])
        document = json.loads(policy["policy"])
        allows = [s for s in document["Statement"] if s["Effect"] == "Allow"]
        assert allows == [
            {"Sid": "AllowCloudFrontReads", "Effect": "Allow", "Principal": {"Service": "cloudfront.amazonaws.com"},
             "Action": "s3:GetObject", "Resource": f"{bucket['arn']}/{prefix}", "Condition": {"StringEquals": this}},
            {"Sid": "AllowCloudFrontToTellMissingKeys", "Effect": "Allow",
             "Principal": {"Service": "cloudfront.amazonaws.com"}, "Action": "s3:ListBucket",
             "Resource": bucket["arn"], "Condition": {"StringEquals": this}},
        ]

        def verdict(action, resource, context, principal="cloudfront.amazonaws.com"):
            return evaluate(document, action, resource, principal, {"aws:SecureTransport": "true", **context})

        key = f"{bucket['arn']}/{prefix[:-1]}2026/IMG_0042.jpg"
        assert verdict("s3:GetObject", key, this) == verdict("s3:ListBucket", bucket["arn"], this) == "Allow"
        for action, resource in (("s3:GetObject", key), ("s3:ListBucket", bucket["arn"])):
            assert verdict(action, resource, other) is None, "another distribution (another account's too)"
            assert verdict(action, resource, {}) is None, "CloudFront on behalf of no distribution"
        # nothing more than reading and listing: no versions, no uploads in flight, nothing outside the prefix
        for action, resource in (("s3:ListBucketVersions", bucket["arn"]), ("s3:GetObjectVersion", key),
                                 ("s3:ListBucketMultipartUploads", bucket["arn"]), ("s3:PutObject", key),
                                 ("s3:GetObject", f"{bucket['arn']}/backfill/manifests/x.csv")):
            assert verdict(action, resource, this) is None, (action, resource)


def test_outputs(stack):
    name, deployment = stack
    exports = deployment.exports
    b = buckets(deployment)
    assert exports["cdnDomain"] == "d111111abcdef8.cloudfront.net"
    assert (exports["uploadsBucket"], exports["processedBucket"], exports["backupBucket"]) == (
        b["uploads"]["bucket"], b["processed"]["bucket"], b["backup"]["bucket"])
    assert exports["topicArn"].startswith("arn:aws:sns:") and exports["deadLetterQueueUrl"].startswith("https://sqs.")
    assert exports["resizeFunction"] == f"image-pipeline-{name}-resize"
    patterns = exports["urlPatterns"]
    base = "https://d111111abcdef8.cloudfront.net/uploads/images"
    assert patterns["original"] == f"{base}/original/{{path}}"
    assert patterns["manifest"] == f"{base}/manifest/{{path}}.json"
    for variation in ("large", "medium", "small", "xsmall", "square_medium", "square_small"):
        assert patterns[variation] == f"{base}/{variation}/{{path}}"
    # both stacks turn the webp plugin on: its files have their own prefix, the original's path kept
    assert patterns["large.webp"] == f"{base}/large.webp/{{path}}"
    assert patterns["square_small.webp"] == f"{base}/square_small.webp/{{path}}"
    assert not any(key.endswith(".avif") for key in patterns)
    assert all(pattern.startswith(f"{base}/") and "{path}" in pattern for pattern in patterns.values())


def test_custom_domain_and_certificate():
    certificate = "arn:aws:acm:us-east-1:123456789012:certificate/0a1b2c3d"
    deployment = deploy("dev", {"domainName": "images.example.com", "certificateArn": certificate})
    (distribution,) = deployment.of_type("aws:cloudfront/distribution:Distribution")
    assert distribution.inputs["aliases"] == ["images.example.com"]
    assert distribution.inputs["viewerCertificate"] == {"acmCertificateArn": certificate, "sslSupportMethod": "sni-only",
                                                        "minimumProtocolVersion": "TLSv1.2_2021"}
    assert deployment.exports["cdnDomain"] == "images.example.com"
    assert deployment.exports["urlPatterns"]["original"].startswith("https://images.example.com/")


def test_a_domain_without_certificate_is_refused():
    from pipeline.config import ConfigError

    with pytest.raises(ConfigError, match="'domainName' and 'certificateArn' go together"):
        deploy("dev", {"domainName": "images.example.com"})


# --- Data lifecycle: what the backup bucket's policy lets through, and what `destroy` leaves ----

BUCKET_POLICY = f"{S3}bucketPolicy:BucketPolicy"
OTHER_ADMIN = f"arn:aws:iam::{ACCOUNT}:role/Admin"  # an administrator who is not the deployer
ROOT_USER = f"arn:aws:iam::{ACCOUNT}:root"


def attached_to(deployment, role: str) -> list:
    """The resources whose `bucket` is the bucket of this role (its policy, versioning, ...)."""
    name = buckets(deployment)[role]["bucket"]
    return [r for r in deployment.resources if r.type.startswith(S3) and r.type != BUCKET
            and r.inputs.get("bucket") == name]


def bucket_resource(deployment, role: str):
    (bucket,) = [r for r in deployment.of_type(BUCKET) if r.inputs["tags"]["pipeline:role"] == role]
    return bucket


def backup_policy(deployment) -> tuple:
    (policy,) = [r for r in attached_to(deployment, "backup") if r.type == BUCKET_POLICY]
    return policy, json.loads(policy.inputs["policy"])


def test_the_backup_policy_is_put_after_every_setting_of_the_backup_bucket(stack):
    """A first `pulumi up` creates what a resource depends on before it: every setting is in place
    before the policy can deny anything."""
    _, deployment = stack
    policy, _ = backup_policy(deployment)
    settings = [r for r in attached_to(deployment, "backup") if r is not policy]
    assert {r.type.split(":")[-1] for r in settings} >= {
        "BucketVersioning", "BucketObjectLockConfiguration", "BucketLifecycleConfiguration",
        "BucketServerSideEncryptionConfiguration", "BucketPublicAccessBlock", "BucketOwnershipControls"}
    assert [r.name for r in settings if not deployment.depends_on(policy, r)] == []


def test_everything_attached_to_the_backup_bucket_is_retained_on_delete(stack):
    _, deployment = stack
    backup = bucket_resource(deployment, "backup")
    assert deployment.retained(backup) and backup.inputs.get("forceDestroy") is not True
    assert [r.name for r in attached_to(deployment, "backup") if not deployment.retained(r)] == []


def test_the_originals_bucket_is_protected_in_prod():
    deployment = deploy("prod")
    for role in ("uploads", "processed", "backup"):
        bucket = bucket_resource(deployment, role)
        assert deployment.protected(bucket), role
        assert bucket.inputs.get("forceDestroy") is not True, role
        # a kept bucket keeps its settings: `destroy --exclude-protected` must not strip it. Its
        # notification goes, with the topic it notifies, and its CORS rules go: no CORS is the safe
        # state, and turning CORS off must take them off the bucket, not only out of the stack.
        assert sorted(r.name for r in attached_to(deployment, role) if not deployment.retained(r)) == {
            "uploads": ["events-uploads-notification", "storage-uploads-cors"],
            "processed": ["storage-processed-cors"], "backup": []}[role], role
    assert not deployment.retained(bucket_resource(deployment, "uploads"))  # an unprotected destroy deletes it


def test_turning_cors_off_in_prod_removes_it_from_the_buckets():
    """The CORS configurations are not retained: when a config change drops them (corsOrigins [] or
    browserUploads false), `pulumi up` deletes them from the buckets instead of only forgetting them."""
    with_cors = deploy("prod")
    assert len(with_cors.of_type(CORS)) == 2 and not any(with_cors.retained(r) for r in with_cors.of_type(CORS))
    assert [r.name for r in deploy("prod", {"browserUploads": "false"}).of_type(CORS)] == ["storage-processed-cors"]


def test_dev_destroys_uploads_and_processed_with_their_contents_and_keeps_the_backup():
    deployment = deploy("dev")
    for role in ("uploads", "processed"):
        bucket = bucket_resource(deployment, role)
        assert not deployment.protected(bucket) and not deployment.retained(bucket)
        assert bucket.inputs["forceDestroy"] is True  # no BucketNotEmpty halfway through a destroy
        assert not any(deployment.retained(r) for r in attached_to(deployment, role))
    backup = bucket_resource(deployment, "backup")
    assert not deployment.protected(backup) and deployment.retained(backup)
    # nothing else in either stack is protected or retained: the rest is rebuilt by `pulumi up`
    storage = [r for r in deployment.resources if r.type.startswith(S3)]
    assert not any(deployment.protected(r) or deployment.retained(r) for r in deployment.resources
                   if r not in storage and r.custom)


def test_every_destroy_empties_and_deletes_the_backfill_jobs_bucket(stack):
    """Job manifests can be listed again and reports expire anyway: `pulumi destroy` (prod's
    `--exclude-protected` too) takes the jobs bucket, its contents and its settings, in every stack."""
    _, deployment = stack
    jobs = bucket_resource(deployment, "backfill")
    assert not deployment.protected(jobs) and not deployment.retained(jobs)
    assert jobs.inputs["forceDestroy"] is True  # no BucketNotEmpty halfway through a destroy
    settings = attached_to(deployment, "backfill")
    assert {r.type.split(":")[-1] for r in settings} == {
        "BucketPublicAccessBlock", "BucketOwnershipControls", "BucketServerSideEncryptionConfiguration",
        "BucketPolicy", "BucketLifecycleConfiguration"}
    assert not any(deployment.protected(r) or deployment.retained(r) for r in settings)
    # and the rest of the backfill (its function, log group and logs, roles) goes as the other functions do
    (component,) = deployment.of_type("imagepipeline:index:Backfill")
    rest = [r for r in deployment.resources if r.parent == component.urn and r is not jobs and r not in settings]
    assert {r.type for r in rest} >= {"aws:lambda/function:Function", "aws:cloudwatch/logGroup:LogGroup",
                                      "aws:iam/role:Role"}
    assert not any(deployment.protected(r) or deployment.retained(r) for r in rest)


@pytest.mark.parametrize("role, protect_data, expected", [
    ("uploads", True, (True, False, False, True)),
    ("processed", True, (True, False, False, True)),
    ("backup", True, (True, True, False, True)),
    ("uploads", False, (False, False, True, False)),
    ("processed", False, (False, False, True, False)),
    ("backup", False, (False, True, False, True)),
    # the backfill's job manifests and reports: no data, gone with the stack whatever protectData says
    ("backfill", True, (False, False, True, False)),
    ("backfill", False, (False, False, True, False)),
])
def test_the_lifecycle_of_each_bucket(role, protect_data, expected):
    from infra.storage import lifecycle

    kept = lifecycle(role, protect_data)
    assert (kept.protect, kept.retain, kept.force_destroy, kept.retain_settings) == expected


def requests_of(policy_document: dict, bucket: str, principal: str, actions) -> dict[str, bool]:
    from infra.policies import bucket_request_allowed

    resource = f"arn:aws:s3:::{bucket}"
    return {action: bucket_request_allowed(policy_document, action, resource if "Object" not in action
                                           or "Lock" in action else f"{resource}/uploads/images/original/a.jpg",
                                           principal) for action in actions}


def test_the_backup_policy_lets_only_the_deployer_change_settings_and_the_policy():
    """Judged on the document: the deployer's bucket-setting calls are not denied; another admin's
    policy and setting changes are; nobody may delete or unlock a backup or delete the bucket."""
    from infra.policies import BACKUP_BUCKET_SETTINGS, BACKUP_OBJECT_PROTECTION, BUCKET_POLICY_CHANGES

    for deployment in (deploy("prod"), deploy("dev", {"deployerArn": DEPLOYER_ARN})):
        _, document = backup_policy(deployment)
        bucket = buckets(deployment)["backup"]["bucket"]
        changes = BACKUP_BUCKET_SETTINGS + BUCKET_POLICY_CHANGES
        assert all(requests_of(document, bucket, DEPLOYER_ARN, changes).values())
        assert not any(requests_of(document, bucket, OTHER_ADMIN, changes).values())
        for principal in (DEPLOYER_ARN, OTHER_ADMIN, ROOT_USER):
            assert not any(requests_of(document, bucket, principal, BACKUP_OBJECT_PROTECTION).values()), principal
        # the root user may always rewrite the policy (S3's rule, not ours), but no setting through it
        assert all(requests_of(document, bucket, ROOT_USER, BUCKET_POLICY_CHANGES).values())
        assert not any(requests_of(document, bucket, ROOT_USER, BACKUP_BUCKET_SETTINGS).values())
        # a request from a service, which has no aws:PrincipalArn, is no deployer either
        assert not any(requests_of(document, bucket, "cloudfront.amazonaws.com", changes).values())
        # the backup function still copies in, through TLS only
        from infra.policies import evaluate
        key = f"arn:aws:s3:::{bucket}/uploads/images/original/a.jpg"
        assert evaluate(document, "s3:PutObject", key, OTHER_ADMIN, {"aws:SecureTransport": "true"}) is None
        assert evaluate(document, "s3:PutObject", key, OTHER_ADMIN, {"aws:SecureTransport": "false"}) == "Deny"


def test_without_a_deployer_a_dev_backup_policy_denies_deletion_only_and_says_so():
    from infra.policies import BACKUP_BUCKET_SETTINGS, BACKUP_OBJECT_PROTECTION, BUCKET_POLICY_CHANGES

    deployment = deploy("dev")
    _, document = backup_policy(deployment)
    bucket = buckets(deployment)["backup"]["bucket"]
    assert all(requests_of(document, bucket, OTHER_ADMIN, BACKUP_BUCKET_SETTINGS + BUCKET_POLICY_CHANGES).values())
    assert not any(requests_of(document, bucket, OTHER_ADMIN, BACKUP_OBJECT_PROTECTION).values())
    assert any("no 'deployerArn'" in w for w in deployment.warnings)


# The S3 requests the provider makes on a bucket for each of our resources, with the IAM action
# each needs. pulumi-aws 7 wraps terraform-provider-aws: a resource's create and update put its
# setting and read it back, its delete removes it. From the provider's documentation
# (BucketVersioning: "Deleting this resource will either suspend versioning ... or simply remove
# the resource from state"; BucketServerSideEncryptionConfiguration: destroying it "resets the
# bucket to Amazon S3 bucket default encryption"; BucketObjectLockConfiguration's delete puts the
# configuration again without its rule; Bucket: forceDestroy empties every version, locked ones
# included, before DeleteBucket) and, for the actions, the S3 API reference ("Required permissions
# for Amazon S3 API operations": DeleteBucketLifecycle needs s3:PutLifecycleConfiguration,
# DeletePublicAccessBlock s3:PutBucketPublicAccessBlock, CreateBucket with object lock
# s3:PutBucketObjectLockConfiguration and s3:PutBucketVersioning besides s3:CreateBucket, ...).
def _put_and_read(put: list[tuple[str, str]], read: tuple[str, str]) -> dict:
    return {"create": put + [read], "update": put + [read]}


S3_CALLS = {
    BUCKET: {"create": [("CreateBucket", "s3:CreateBucket"), ("PutBucketTagging", "s3:PutBucketTagging"),
                        ("GetBucketVersioning", "s3:GetBucketVersioning"),
                        ("GetObjectLockConfiguration", "s3:GetBucketObjectLockConfiguration"),
                        ("GetBucketPolicy", "s3:GetBucketPolicy")],
             "update": [("PutBucketTagging", "s3:PutBucketTagging"), ("GetBucketTagging", "s3:GetBucketTagging")],
             "delete": [("DeleteBucket", "s3:DeleteBucket")]},
    f"{S3}bucketVersioning:BucketVersioning": {
        **_put_and_read([("PutBucketVersioning", "s3:PutBucketVersioning")],
                        ("GetBucketVersioning", "s3:GetBucketVersioning")),
        "delete": [("PutBucketVersioning(Suspended)", "s3:PutBucketVersioning")]},
    f"{S3}bucketObjectLockConfiguration:BucketObjectLockConfiguration": {
        **_put_and_read([("PutObjectLockConfiguration", "s3:PutBucketObjectLockConfiguration")],
                        ("GetObjectLockConfiguration", "s3:GetBucketObjectLockConfiguration")),
        "delete": [("PutObjectLockConfiguration(no rule)", "s3:PutBucketObjectLockConfiguration")]},
    f"{S3}bucketLifecycleConfiguration:BucketLifecycleConfiguration": {
        **_put_and_read([("PutBucketLifecycleConfiguration", "s3:PutLifecycleConfiguration")],
                        ("GetBucketLifecycleConfiguration", "s3:GetLifecycleConfiguration")),
        "delete": [("DeleteBucketLifecycle", "s3:PutLifecycleConfiguration")]},
    f"{S3}bucketServerSideEncryptionConfiguration:BucketServerSideEncryptionConfiguration": {
        **_put_and_read([("PutBucketEncryption", "s3:PutEncryptionConfiguration")],
                        ("GetBucketEncryption", "s3:GetEncryptionConfiguration")),
        "delete": [("DeleteBucketEncryption", "s3:PutEncryptionConfiguration")]},
    f"{S3}bucketPublicAccessBlock:BucketPublicAccessBlock": {
        **_put_and_read([("PutPublicAccessBlock", "s3:PutBucketPublicAccessBlock")],
                        ("GetPublicAccessBlock", "s3:GetBucketPublicAccessBlock")),
        "delete": [("DeletePublicAccessBlock", "s3:PutBucketPublicAccessBlock")]},
    f"{S3}bucketOwnershipControls:BucketOwnershipControls": {
        **_put_and_read([("PutBucketOwnershipControls", "s3:PutBucketOwnershipControls")],
                        ("GetBucketOwnershipControls", "s3:GetBucketOwnershipControls")),
        "delete": [("DeleteBucketOwnershipControls", "s3:PutBucketOwnershipControls")]},
    BUCKET_POLICY: {
        **_put_and_read([("PutBucketPolicy", "s3:PutBucketPolicy")], ("GetBucketPolicy", "s3:GetBucketPolicy")),
        "delete": [("DeleteBucketPolicy", "s3:DeleteBucketPolicy")]},
}
# Calls S3 refuses on a bucket with object lock whatever any policy says ("After you enable Object
# Lock on a bucket, you can't disable Object Lock or suspend versioning for that bucket").
REFUSED_WITH_OBJECT_LOCK = {"PutBucketVersioning(Suspended)"}


@dataclass
class Step:
    operation: str
    resource: str
    call: str
    action: str
    resource_arn: str
    policies: list  # the backup policy documents that may be in force when the call is made (None: no policy)
    refused_by_s3: bool = False

    def allowed_for(self, principal: str, action: str | None = None) -> bool:
        from infra.policies import bucket_request_allowed

        return all(bucket_request_allowed(p, action or self.action, self.resource_arn, principal)
                   for p in self.policies)


def _calls(resource, operation: str) -> list[tuple[str, str]]:
    calls = list(S3_CALLS[resource.type][operation])
    if resource.type == BUCKET and operation == "create" and resource.inputs.get("objectLockEnabled"):
        calls[0:1] = [("CreateBucket", a) for a in
                      ("s3:CreateBucket", "s3:PutBucketObjectLockConfiguration", "s3:PutBucketVersioning")]
    if resource.type == BUCKET and operation == "delete" and resource.inputs.get("forceDestroy"):
        calls[0:0] = [("ListObjectVersions", "s3:ListBucketVersions"), ("DeleteObjects", "s3:DeleteObjectVersion"),
                      ("DeleteObjects(bypass governance)", "s3:BypassGovernanceRetention")]
    return calls


def rehearse(before, operation: str, after=None) -> list[Step]:
    """The S3 calls the provider makes on the backup bucket for a first `pulumi up` of `before`
    ("create"), for an `up` from `before` to `after` ("update"), or for a `pulumi destroy` of
    `before` ("delete"), each with the backup policies that may be in force at that moment.

    The engine orders by dependency only: a resource's calls come after those of everything it
    depends on (create, update) or before them (delete); anything unordered may come first. So a
    policy counts as in force at a call unless the dependencies order it after (create) or before
    (delete) that call."""
    deployment = after or before
    backup = bucket_resource(deployment, "backup")
    bucket = backup.outputs["bucket"]
    policy, new_policy = backup_policy(deployment)
    _, old_policy = backup_policy(before)
    steps = []

    def add(resource, calls, policies):
        for call, action in calls:
            steps.append(Step(operation, resource.name, call, action, f"arn:aws:s3:::{bucket}", policies,
                              call in REFUSED_WITH_OBJECT_LOCK))

    resources = [backup] + attached_to(deployment, "backup")
    if operation == "create":
        for resource in resources:
            if resource is policy:  # put into a bucket without a policy, then read back under its own
                add(resource, _calls(resource, "create")[:-1], [None])
                add(resource, _calls(resource, "create")[-1:], [new_policy])
            else:
                ordered_before = resource is backup or deployment.depends_on(policy, resource)
                add(resource, _calls(resource, "create"), [None] if ordered_before else [None, new_policy])
    elif operation == "update":
        previous = {r.urn: r for r in [bucket_resource(before, "backup")] + attached_to(before, "backup")}
        for resource in resources:
            old = previous.get(resource.urn)
            if old is None:
                add(resource, _calls(resource, "create"), [old_policy, new_policy])
            elif resource is policy and old.inputs != resource.inputs:  # put under the old one, read under itself
                add(resource, _calls(resource, "update")[:-1], [old_policy])
                add(resource, _calls(resource, "update")[-1:], [new_policy])
            elif old.inputs != resource.inputs:
                in_force = [old_policy] if deployment.depends_on(policy, resource) else [old_policy, new_policy]
                add(resource, _calls(resource, "update"), in_force)
    else:
        for resource in resources:
            if deployment.retained(resource):
                continue  # Pulumi forgets it; the provider is not called
            if resource is policy:
                in_force = [new_policy]
            elif not deployment.retained(policy) and deployment.depends_on(policy, resource):
                in_force = [None]  # the policy is deleted before it
            else:
                in_force = [None, new_policy]
            add(resource, _calls(resource, "delete"), in_force)
    return steps


def _report(steps: list[Step]) -> str:
    def policy(step):  # which policy may be in force: none yet, the policy, or (update) the old or new one
        names = ["old", "new"] if step.operation == "update" else ["policy"]
        return " or ".join("none" if p is None else names.pop(0) for p in step.policies)

    return "\n".join(f"{s.operation:6} {s.resource:34} {s.call:36} {s.action:37} {policy(s):14} "
                     f"deployer {'ok' if s.allowed_for(DEPLOYER_ARN) else 'DENIED'}, "
                     f"other admin {'ok' if s.allowed_for(OTHER_ADMIN) else 'DENIED'}"
                     f"{', REFUSED BY S3' if s.refused_by_s3 else ''}" for s in steps)


def _check_rehearsal(steps: list[Step]) -> None:
    from infra.policies import BUCKET_POLICY_CHANGES

    failing = [s for s in steps if not s.allowed_for(DEPLOYER_ARN) or s.refused_by_s3]
    assert failing == [], "\n" + _report(failing)
    # whenever the policy is in force, another admin may not change it
    for step in steps:
        if any(p is not None for p in step.policies):
            for action in BUCKET_POLICY_CHANGES:
                assert not step.allowed_for(OTHER_ADMIN, action), (step, action)


@pytest.mark.parametrize("name", ["dev", "prod"])
def test_rehearsal_first_up_config_change_and_destroy_of_the_backup_bucket(name):
    """The three operations at the level mocks allow: every S3 call the provider makes on the backup
    bucket, judged against every policy that may be in force at that moment, for the deployer (must
    pass) and for another admin (may not touch the policy)."""
    overrides = {"deployerArn": DEPLOYER_ARN}
    first = deploy(name, overrides)
    created = rehearse(first, "create")
    assert {s.call for s in created} >= {"CreateBucket", "PutBucketVersioning", "PutObjectLockConfiguration",
                                         "PutBucketLifecycleConfiguration", "PutBucketPolicy"}
    _check_rehearsal(created)

    changed = deploy(name, {**overrides, "backupRetentionMode": "COMPLIANCE", "backupRetentionDays": "400",
                            "backupTransitionDays": "60"})
    updated = rehearse(first, "update", changed)
    assert {s.call for s in updated} == {"PutObjectLockConfiguration", "GetObjectLockConfiguration",
                                         "PutBucketLifecycleConfiguration", "GetBucketLifecycleConfiguration"}
    _check_rehearsal(updated)

    destroyed = rehearse(changed, "delete")
    assert destroyed == []  # retained, all of it: `destroy` makes no call on the backup bucket
    _check_rehearsal(destroyed)


def test_rehearsal_another_admin_cannot_run_the_stack_once_the_policy_is_in_force():
    first = deploy("prod")
    changed = deploy("prod", {"backupRetentionDays": "400"})
    updated = rehearse(first, "update", changed)
    assert updated and not any(s.allowed_for(OTHER_ADMIN) for s in updated if s.action.startswith("s3:Put"))


def test_handing_over_to_a_new_deployer_is_an_up_run_by_the_old_one():
    new_deployer = f"arn:aws:iam::{ACCOUNT}:role/platform-deployer"
    first = deploy("prod")
    handed_over = deploy("prod", {"deployerArn": new_deployer, "backupRetentionDays": "400"})
    steps = rehearse(first, "update", handed_over)
    assert "PutBucketPolicy" in {s.call for s in steps}
    assert all(s.allowed_for(DEPLOYER_ARN) for s in steps)  # the old deployer runs it
    assert not all(s.allowed_for(new_deployer) for s in steps)  # the new one could not yet
    _, document = backup_policy(handed_over)
    bucket = buckets(handed_over)["backup"]["bucket"]
    assert all(requests_of(document, bucket, new_deployer, ["s3:PutBucketPolicy"]).values())
    assert not any(requests_of(document, bucket, DEPLOYER_ARN, ["s3:PutBucketPolicy"]).values())
    assert any("runs as" in w and new_deployer in w for w in handed_over.warnings)  # the mocked caller is the old one


# --- The policy evaluator the lifecycle tests rely on -------------------------------------------------

@pytest.mark.parametrize("statement, action, resource, principal, context, expected", [
    ({"Effect": "Allow", "Principal": "*", "Action": "s3:GetObject", "Resource": "arn:aws:s3:::b/*"},
     "s3:GetObject", "arn:aws:s3:::b/k", "p", {}, "Allow"),
    ({"Effect": "Allow", "Principal": "*", "Action": "S3:get*", "Resource": "arn:aws:s3:::b/*"},
     "s3:GetObject", "arn:aws:s3:::b/k", "p", {}, "Allow"),  # actions: case-insensitive wildcards
    ({"Effect": "Allow", "Principal": "*", "Action": "s3:GetObject", "Resource": "arn:aws:s3:::B/*"},
     "s3:GetObject", "arn:aws:s3:::b/k", "p", {}, None),  # resources: case-sensitive
    ({"Effect": "Deny", "Principal": "*", "NotAction": "s3:Get*", "Resource": "*"},
     "s3:PutObject", "arn:aws:s3:::b/k", "p", {}, "Deny"),
    ({"Effect": "Deny", "Principal": "*", "NotAction": "s3:Get*", "Resource": "*"},
     "s3:GetObject", "arn:aws:s3:::b/k", "p", {}, None),
    ({"Effect": "Deny", "Principal": {"AWS": ["arn:aws:iam::1:role/a"]}, "Action": "*", "Resource": "*"},
     "s3:GetObject", "x", "arn:aws:iam::1:role/b", {}, None),
    ({"Effect": "Deny", "Principal": "*", "Action": "*", "Resource": "*",
      "Condition": {"ArnNotEquals": {"aws:PrincipalArn": "arn:aws:iam::1:role/a"}}},
     "s3:PutBucketPolicy", "x", "arn:aws:iam::1:role/a", {}, None),
    ({"Effect": "Deny", "Principal": "*", "Action": "*", "Resource": "*",
      "Condition": {"ArnNotEquals": {"aws:PrincipalArn": "arn:aws:iam::1:role/a"}}},
     "s3:PutBucketPolicy", "x", "arn:aws:iam::1:role/A", {}, "Deny"),  # ARNs: case-sensitive
    ({"Effect": "Deny", "Principal": "*", "Action": "*", "Resource": "*",
      "Condition": {"ArnLike": {"aws:PrincipalArn": "arn:aws:iam::1:role/*"}}},
     "s3:PutBucketPolicy", "x", "arn:aws:iam::1:user/u", {}, None),
    ({"Effect": "Deny", "Principal": "*", "Action": "*", "Resource": "*",
      "Condition": {"StringNotEquals": {"aws:PrincipalTag/team": "ops"}}},
     "s3:PutBucketPolicy", "x", "arn:aws:iam::1:role/a", {}, "Deny"),  # a missing key satisfies a negated operator
    ({"Effect": "Deny", "Principal": "*", "Action": "*", "Resource": "*",
      "Condition": {"StringEquals": {"aws:PrincipalTag/team": "ops"}}},
     "s3:PutBucketPolicy", "x", "arn:aws:iam::1:role/a", {}, None),  # and fails a plain one
    ({"Effect": "Deny", "Principal": "*", "Action": "*", "Resource": "*",
      "Condition": {"Bool": {"aws:SecureTransport": "false"}}},
     "s3:GetObject", "x", "p", {"aws:SecureTransport": "true"}, None),
])
def test_the_policy_evaluator(statement, action, resource, principal, context, expected):
    from infra.policies import document, evaluate

    assert evaluate(document(statement), action, resource, principal, context) == expected


def test_an_explicit_deny_wins_and_what_is_not_modelled_raises():
    from infra.policies import document, evaluate

    allow = {"Effect": "Allow", "Principal": "*", "Action": "s3:*", "Resource": "*"}
    deny = {"Effect": "Deny", "Principal": "*", "Action": "s3:DeleteObject", "Resource": "*"}
    assert evaluate(document(allow, deny), "s3:DeleteObject", "x", "p") == "Deny"
    assert evaluate(document(deny, allow), "s3:GetObject", "x", "p") == "Allow"
    for unmodelled in ({**deny, "Condition": {"IpAddress": {"aws:SourceIp": "10.0.0.0/8"}}},
                       {**deny, "Principal": {"AWS": "123456789012"}}):
        with pytest.raises(ValueError):
            evaluate(document(unmodelled), "s3:DeleteObject", "x", "p")


@pytest.mark.parametrize("caller, principal, expected", [
    (f"arn:aws:sts::{ACCOUNT}:assumed-role/deployer/ci", f"arn:aws:iam::{ACCOUNT}:role/deployer", True),
    (f"arn:aws:sts::{ACCOUNT}:assumed-role/deployer/ci", f"arn:aws:iam::{ACCOUNT}:role/ci/deployer", True),
    (f"arn:aws:sts::{ACCOUNT}:assumed-role/deployer/ci", f"arn:aws:iam::{ACCOUNT}:role/other", False),
    (f"arn:aws:sts::{ACCOUNT}:assumed-role/deployer/ci", f"arn:aws:iam::999999999999:role/deployer", False),
    (f"arn:aws:iam::{ACCOUNT}:user/ci", f"arn:aws:iam::{ACCOUNT}:user/ci", True),
    (f"arn:aws:iam::{ACCOUNT}:user/ci", f"arn:aws:iam::{ACCOUNT}:role/ci", False),
])
def test_is_principal(caller, principal, expected):
    from infra.policies import is_principal

    assert is_principal(caller, principal) is expected


# --- Config checks at preview: what AWS would refuse later ---------------------------------------

def refused(stack: str, overrides: dict, key: str):
    from pipeline.config import ConfigError

    with pytest.raises(ConfigError, match=f"'{key}'"):
        deploy(stack, overrides)


def test_prod_without_a_deployer_does_not_deploy():
    from pipeline.config import ConfigError

    # named in the one message that names every missing setting only a person can know
    with pytest.raises(ConfigError, match="stack 'prod' is missing settings only a person can know") as stopped:
        deploy("prod", {"deployerArn": ""})
    assert missing_keys(stopped.value) == ["deployerArn"]
    assert "pulumi config set deployerArn" in str(stopped.value)
    deploy("prod", {"deployerArn": "", "protectData": "false"})  # unprotected, it may


@pytest.mark.parametrize("arn", [f"arn:aws:sts::{ACCOUNT}:assumed-role/deployer/ci", "deployer",
                                 f"arn:aws:iam::{ACCOUNT}:group/admins"])
def test_a_deployer_that_aws_principal_arn_never_equals_is_refused(arn):
    refused("prod", {"deployerArn": arn}, "deployerArn")


@pytest.mark.parametrize("arn, message", [
    (f"arn:aws:acm:eu-west-1:{ACCOUNT}:certificate/0a1b2c3d", "must be a certificate in us-east-1"),
    (f"arn:aws:iam::{ACCOUNT}:server-certificate/x", "must be an ACM certificate ARN"),
])
def test_a_certificate_cloudfront_cannot_use_is_refused(arn, message):
    from pipeline.config import ConfigError

    with pytest.raises(ConfigError, match=f"'certificateArn' {message}"):
        deploy("dev", {"domainName": "images.example.com", "certificateArn": arn})


@pytest.mark.parametrize("days", ["10", "2", "366", "-1"])
def test_a_log_retention_cloudwatch_refuses_is_refused(days):
    refused("dev", {"logRetentionDays": days}, "logRetentionDays")


@pytest.mark.parametrize("days", ["0", "1", "400", "3653"])
def test_every_log_retention_cloudwatch_accepts_is_accepted(days):
    deployment = deploy("dev", {"logRetentionDays": days})
    assert {r.inputs["retentionInDays"] for r in deployment.of_type("aws:cloudwatch/logGroup:LogGroup")} == {int(days)}


@pytest.mark.parametrize("key, value", [
    ("architecture", "amd64"), ("pythonVersion", "3.11"), ("backupRetentionMode", "governance"),
    ("priceClass", "PriceClass_50"), ("resizeMemoryMb", "64"), ("backupMemoryMb", "10241"),
    ("resizeTimeoutSeconds", "0"), ("backupTimeoutSeconds", "901"), ("reservedConcurrency", "-2"),
    ("maxRetries", "3"), ("maxEventAgeSeconds", "59"), ("backupRetentionDays", "0"),
    ("backupTransitionDays", "0"), ("accountConcurrencyLimit", "-5"),
])
def test_values_aws_refuses_are_refused_naming_the_key(key, value):
    refused("dev", {key: value}, key)


def test_a_protect_data_that_is_no_boolean_is_refused_naming_the_key():
    with pytest.raises(Exception, match="protectData"):
        deploy("dev", {"protectData": "yes"})


def concurrency_warnings(deployment) -> list[str]:
    return [w for w in deployment.warnings if "concurrency limit" in w]


def test_reserved_concurrency_is_checked_against_the_account_limit():
    """Every reservation counts: reservedConcurrency for resize and backup, backfillConcurrency for
    the backfill function (always reserved), and the 100 Lambda keeps unreserved."""
    (unstated,) = concurrency_warnings(deploy("prod"))  # 50 for each of two functions, 10 for the backfill
    assert "at least 210" in unstated and "'accountConcurrencyLimit'" in unstated
    assert "'reservedConcurrency' 50" in unstated and "'backfillConcurrency' 10" in unstated
    (too_small,) = concurrency_warnings(deploy("prod", {"accountConcurrencyLimit": "209"}))
    assert "at least 210" in too_small and "would fail" in too_small
    assert concurrency_warnings(deploy("prod", {"accountConcurrencyLimit": "210"})) == []
    # dev reserves nothing for resize and backup (-1), but the backfill function still reserves its 10
    (dev,) = concurrency_warnings(deploy("dev"))
    assert "at least 110" in dev and "'reservedConcurrency'" not in dev.split(" need ")[0]
    assert concurrency_warnings(deploy("dev", {"accountConcurrencyLimit": "110"})) == []
    (too_small,) = concurrency_warnings(deploy("dev", {"backfillConcurrency": "50", "accountConcurrencyLimit": "110"}))
    assert "at least 150" in too_small and "would fail" in too_small
    assert concurrency_warnings(deploy("dev", {"reservedConcurrency": "0", "accountConcurrencyLimit": "110"})) == []


def test_a_deployment_not_run_by_the_deployer_is_warned_about():
    assert not [w for w in deploy("prod").warnings if "runs as" in w]
    other = f"arn:aws:iam::{ACCOUNT}:role/someone-else"
    (warning,) = [w for w in deploy("prod", {"deployerArn": other}).warnings if "runs as" in w]
    assert other in warning
