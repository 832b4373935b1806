"""The Pulumi program, run for real under mocks for both stack files, asserted resource by resource."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections import Counter

import pytest

from pulumi_harness import (ACCOUNT, CACHE_POLICY_ID, DISTRIBUTION_ID, KEY_GROUP_ID, ORIGINALS_KEY_ID,
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
        BUCKET: 3, f"{S3}bucketPublicAccessBlock:BucketPublicAccessBlock": 3,
        f"{S3}bucketOwnershipControls:BucketOwnershipControls": 3,
        f"{S3}bucketServerSideEncryptionConfiguration:BucketServerSideEncryptionConfiguration": 3,
        f"{S3}bucketPolicy:BucketPolicy": 3, f"{S3}bucketCorsConfiguration:BucketCorsConfiguration": 2,
        f"{S3}bucketVersioning:BucketVersioning": 2, f"{S3}bucketObjectLockConfiguration:BucketObjectLockConfiguration": 1,
        f"{S3}bucketLifecycleConfiguration:BucketLifecycleConfiguration": 3, f"{S3}bucketNotification:BucketNotification": 1,
        "aws:sns/topic:Topic": 2 if name == "prod" else 1, "aws:sns/topicPolicy:TopicPolicy": 1,
        "aws:sns/topicSubscription:TopicSubscription": 3 if name == "prod" else 2,
        "aws:lambda/function:Function": 2, "aws:lambda/layerVersion:LayerVersion": 1,
        "aws:lambda/permission:Permission": 2, "aws:lambda/functionEventInvokeConfig:FunctionEventInvokeConfig": 2,
        "aws:iam/role:Role": 2, "aws:iam/rolePolicy:RolePolicy": 4, "aws:iam/policy:Policy": 1,
        "aws:cloudwatch/logGroup:LogGroup": 2,
        "aws:sqs/queue:Queue": 1, "aws:cloudwatch/metricAlarm:MetricAlarm": 3,
        "aws:cloudfront/distribution:Distribution": 1, "aws:cloudfront/originAccessControl:OriginAccessControl": 1,
        "aws:cloudfront/responseHeadersPolicy:ResponseHeadersPolicy": 1,
        "aws:cloudfront/cachePolicy:CachePolicy": 1, "aws:cloudfront/function:Function": 2,
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
            "s3:PutBucketObjectLockConfiguration"} <= set(deny["Action"])
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
    functions = {r.outputs["name"]: r.outputs for r in deployment.of_type("aws:lambda/function:Function")}
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
    originals_behaviour, *others = distribution.inputs["orderedCacheBehaviors"] + [distribution.inputs["defaultCacheBehavior"]]
    assert originals_behaviour["pathPattern"] == "/uploads/images/original/*" and len(others) == 2
    for behaviour, function in [(originals_behaviour, originals)] + [(b, rest) for b in others]:
        assert behaviour["cachePolicyId"] == CACHE_POLICY_ID
        assert behaviour["functionAssociations"] == [{"eventType": "viewer-response",
                                                      "functionArn": function.outputs["arn"]}]
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


@pytest.mark.parametrize("has_version, origin, expected", [
    (True, None, "public, max-age=31536000, immutable"),
    (True, "public, max-age=120", "public, max-age=31536000, immutable"),
    (False, "public, max-age=60", "public, max-age=60"),  # a manifest keeps its own
    (False, "no-store", "no-store"),
    (False, None, "public, max-age=120"),
    (False, "", "public, max-age=120"),
])
def test_the_viewer_cache_control_rule(has_version, origin, expected):
    from pipeline.caching import viewer_cache_control

    assert viewer_cache_control(has_version, origin) == expected


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
    from pipeline.caching import (DOWNLOAD_CONTENT_TYPE, DOWNLOAD_DISPOSITION, ORIGINAL_IMAGE_TYPES, VARIATION_CACHE,
                                  VERSION_PARAMETER, VERSIONED_CACHE)

    code = getattr(infra.cdn, code_name)
    literals = re.findall(r'"((?:[^"\\]|\\.)*)"', code)
    expected = {"cache-control", VERSION_PARAMETER, VERSIONED_CACHE, VARIATION_CACHE}
    if code_name == "ORIGINALS_RESPONSE_CODE":
        expected |= {"content-type", "content-disposition", DOWNLOAD_CONTENT_TYPE, DOWNLOAD_DISPOSITION,
                     *ORIGINAL_IMAGE_TYPES}
    assert sorted(set(literals)) == sorted(expected)
    assert "'" not in code and "max-age" not in re.sub(r'"[^"]*"', "", code)
    assert len(code.encode()) < 1024  # CloudFront allows 10 KB; small is the point


def run_function(code: str, event: dict) -> dict:
    """What the function's handler returns for `event`, run by node."""
    script = f"{code}\nprocess.stdout.write(JSON.stringify(handler({json.dumps(event)})));"
    result = subprocess.run(["node", "-e", script], capture_output=True, text=True, timeout=30, check=True)
    return json.loads(result.stdout)


needs_node = pytest.mark.skipif(shutil.which("node") is None, reason="needs node to run the function's JavaScript")


@needs_node
@pytest.mark.parametrize("query, has_version", [
    ({"v": {"value": "3f2a9c"}, "w": {"value": "1"}}, True),
    ({"v": {"value": "3f2a9c", "multiValue": [{"value": "3f2a9c"}, {"value": "0"}]}}, True),
    ({"w": {"value": "1"}}, False),
    ({"v": {"value": ""}}, False),  # `?v=` names no version
    ({}, False),
])
@pytest.mark.parametrize("origin", [None, "", "public, max-age=60", "public, max-age=120"])
@pytest.mark.parametrize("original", [False, True])
def test_the_function_applies_the_same_rule_as_python(query, has_version, origin, original):
    """CloudFront's runtime is not node, but this code uses nothing either lacks."""
    from infra.cdn import ORIGINALS_RESPONSE_CODE, VIEWER_RESPONSE_CODE
    from pipeline.caching import viewer_response_headers

    headers = {"content-type": "image/jpeg"} | ({} if origin is None else {"cache-control": origin})
    event = {"request": {"uri": "/uploads/images/original/a.jpg", "querystring": query},
             "response": {"statusCode": 200, "headers": {k: {"value": v} for k, v in headers.items()}}}
    response = run_function(ORIGINALS_RESPONSE_CODE if original else VIEWER_RESPONSE_CODE, event)
    assert response["statusCode"] == 200
    expected = viewer_response_headers(headers, has_version=has_version, original=original)
    assert response["headers"] == {k: {"value": v} for k, v in expected.items()}


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
            expected = viewer_response_headers(headers, has_version=False, original=original)
            assert got == {k: {"value": v} for k, v in expected.items()}, headers
            if original and headers.get("content-type") in ("text/html", "image/svg+xml"):
                assert got["content-disposition"] == {"value": "attachment"}


@needs_node
def test_a_private_originals_function_answers_403_before_any_origin():
    from infra.cdn import ORIGINALS_DENIED_CODE

    event = {"request": {"method": "GET", "uri": "/uploads/images/original/2026/IMG_0042.HEIC", "querystring": {},
                         "headers": {}, "cookies": {}}}
    assert run_function(ORIGINALS_DENIED_CODE, event) == {"statusCode": 403, "statusDescription": "Forbidden"}


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
    assert [s["Sid"] for s in uploads_policy(deployment) if s["Effect"] == "Allow"] == ["AllowCloudFrontReads"]
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
    assert [s["Sid"] for s in uploads_policy(deployment) if s["Effect"] == "Allow"] == ["AllowCloudFrontReads"]
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
    assert set(functions) == {"cdn-cache-control", "cdn-originals-denied"}
    denied = functions["cdn-originals-denied"]
    assert denied.inputs["code"] == ORIGINALS_DENIED_CODE and denied.inputs["publish"] is True
    # its path never falls through to another behaviour: answered 403 before cache and origin
    assert originals["functionAssociations"] == [{"eventType": "viewer-request", "functionArn": denied.outputs["arn"]}]
    assert "trustedKeyGroups" not in originals and not deployment.of_type("aws:cloudfront/keyGroup:KeyGroup")
    assert all(b["targetOriginId"] == "processed" for b in others)
    # and the uploads bucket lets nobody read, not even this distribution
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
HUMAN_KEYS = ("alarmEmail", "corsOrigins", "domainName", "certificateArn", "originalsPublicKey", "uploaderRoleTrust")


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
    assert missing_keys(stopped.value) == ["alarmEmail", "corsOrigins", "originalsPublicKey"]
    assert "pulumi config set alarmEmail" in str(stopped.value)


@pytest.mark.parametrize("present, missing", [
    ({"alarmEmail": "ops@acme.test"}, ["corsOrigins", "originalsPublicKey"]),
    ({"corsOrigins": json.dumps(["https://app.acme.test"])}, ["alarmEmail", "originalsPublicKey"]),
    ({"browserUploads": "false"}, ["alarmEmail", "originalsPublicKey"]),  # no browser uploads: no origins needed
    ({"originals": "private"}, ["alarmEmail", "corsOrigins"]),
])
def test_prod_names_exactly_what_is_still_missing(present, missing):
    from pipeline.config import ConfigError

    with pytest.raises(ConfigError) as stopped:
        deploy("prod", present, set_by_a_person=False)
    assert missing_keys(stopped.value) == missing


def test_prod_with_what_a_person_set_deploys_and_needs_no_domain():
    deployment = deploy("prod", {"alarmEmail": "ops@acme.test", "corsOrigins": json.dumps(["https://app.acme.test"]),
                                 "originalsPublicKey": ORIGINALS_PUBLIC_KEY}, set_by_a_person=False)
    (email,) = [r.inputs for r in deployment.of_type("aws:sns/topicSubscription:TopicSubscription")
                if r.inputs["protocol"] == "email"]
    assert email["endpoint"] == "ops@acme.test"
    assert deployment.exports["cdnDomain"] == "d111111abcdef8.cloudfront.net"


@pytest.mark.parametrize("stack_name", ["dev", "fresh"])
def test_dev_and_a_new_stack_deploy_with_defaults(stack_name):
    deployment = deploy(stack_name, set_by_a_person=False)
    assert deployment.exports["originals"] == "public" and deployment.of_type("aws:cloudfront/distribution:Distribution")


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


def test_served_bucket_policies_let_only_this_distribution_read(stack):
    _, deployment = stack
    (distribution,) = deployment.of_type("aws:cloudfront/distribution:Distribution")
    for role, prefix in (("uploads", "uploads/images/original/*"), ("processed", "uploads/images/*")):
        bucket = buckets(deployment)[role]
        (policy,) = attached(deployment, f"{S3}bucketPolicy:BucketPolicy", bucket["bucket"])
        (allow,) = [s for s in statements(policy["policy"]) if s["Effect"] == "Allow"]
        assert allow["Principal"] == {"Service": "cloudfront.amazonaws.com"} and allow["Action"] == "s3:GetObject"
        assert allow["Resource"] == f"{bucket['arn']}/{prefix}"
        assert allow["Condition"] == {"StringEquals": {"AWS:SourceArn": distribution.outputs["arn"]}}


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
