"""The Pulumi program, run for real under mocks for both stack files, asserted resource by resource."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections import Counter

import pytest

from pulumi_harness import ACCOUNT, CACHE_POLICY_ID, DISTRIBUTION_ID, deploy

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
        "aws:iam/role:Role": 4, "aws:iam/rolePolicy:RolePolicy": 7, "aws:cloudwatch/logGroup:LogGroup": 3,
        "aws:sqs/queue:Queue": 1, "aws:cloudwatch/metricAlarm:MetricAlarm": 3,
        "aws:cloudfront/distribution:Distribution": 1, "aws:cloudfront/originAccessControl:OriginAccessControl": 1,
        "aws:cloudfront/responseHeadersPolicy:ResponseHeadersPolicy": 1,
        "aws:cloudfront/cachePolicy:CachePolicy": 1, "aws:cloudfront/function:Function": 1,
    }
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


def test_uploads_and_processed_allow_browser_cors_from_configured_origins(stack):
    name, deployment = stack
    origins = ["https://www.example.com"] if name == "prod" else ["http://localhost:3000"]
    all_buckets = buckets(deployment)
    (uploads,) = attached(deployment, f"{S3}bucketCorsConfiguration:BucketCorsConfiguration", all_buckets["uploads"]["bucket"])
    assert uploads["corsRules"][0]["allowedOrigins"] == origins and "PUT" in uploads["corsRules"][0]["allowedMethods"]
    (processed,) = attached(deployment, f"{S3}bucketCorsConfiguration:BucketCorsConfiguration",
                            all_buckets["processed"]["bucket"])
    assert processed["corsRules"][0]["allowedMethods"] == ["GET", "HEAD"]


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


def test_every_behaviour_keys_the_cache_on_v_only_and_sets_cache_control_on_the_way_out(stack):
    from pipeline.caching import VERSIONED_CACHE

    _, deployment = stack
    (distribution,) = deployment.of_type("aws:cloudfront/distribution:Distribution")
    (policy,) = deployment.of_type("aws:cloudfront/cachePolicy:CachePolicy")
    (function,) = deployment.of_type("aws:cloudfront/function:Function")
    behaviours = distribution.inputs["orderedCacheBehaviors"] + [distribution.inputs["defaultCacheBehavior"]]
    assert len(behaviours) == 3
    for behaviour in behaviours:
        assert behaviour["cachePolicyId"] == CACHE_POLICY_ID
        assert behaviour["functionAssociations"] == [{"eventType": "viewer-response",
                                                      "functionArn": function.outputs["arn"]}]
    key = policy.inputs["parametersInCacheKeyAndForwardedToOrigin"]
    assert key["queryStringsConfig"] == {"queryStringBehavior": "whitelist", "queryStrings": {"items": ["v"]}}
    assert key["headersConfig"] == {"headerBehavior": "none"} and key["cookiesConfig"] == {"cookieBehavior": "none"}
    assert key["enableAcceptEncodingGzip"] is True and key["enableAcceptEncodingBrotli"] is True
    assert (policy.inputs["minTtl"], policy.inputs["defaultTtl"], policy.inputs["maxTtl"]) == (0, 120, 31536000)
    assert function.inputs["runtime"] == "cloudfront-js-2.0" and function.inputs["publish"] is True
    assert VERSIONED_CACHE in function.inputs["code"]
    errors = {e["errorCode"]: e for e in distribution.inputs["customErrorResponses"]}
    assert set(errors) == {403, 404}
    assert all(e["errorCachingMinTtl"] <= 5 and "responseCode" not in e and "responsePagePath" not in e
               for e in errors.values())


@pytest.mark.parametrize("has_version, origin, expected", [
    (True, None, "public, max-age=31536000, immutable"),
    (True, "public, max-age=120", "public, max-age=31536000, immutable"),
    (False, "public, max-age=60", "public, max-age=60"),  # a manifest keeps its own
    (False, "no-store", "no-store"),
    (False, None, "public, max-age=120"),
    (False, "", "public, max-age=120"),
])
def test_the_viewer_cache_control_rule(has_version, origin, expected):
    from infra.cdn import viewer_cache_control

    assert viewer_cache_control(has_version, origin) == expected


def test_the_function_code_is_made_of_exactly_the_shared_constants():
    from infra.cdn import VIEWER_RESPONSE_CODE
    from pipeline.caching import VARIATION_CACHE, VERSION_PARAMETER, VERSIONED_CACHE

    literals = re.findall(r'"((?:[^"\\]|\\.)*)"', VIEWER_RESPONSE_CODE)
    assert sorted(set(literals)) == sorted({"cache-control", VERSION_PARAMETER, VERSIONED_CACHE, VARIATION_CACHE})
    assert "'" not in VIEWER_RESPONSE_CODE and "max-age" not in re.sub(r'"[^"]*"', "", VIEWER_RESPONSE_CODE)
    assert len(VIEWER_RESPONSE_CODE.encode()) < 1024  # CloudFront allows 10 KB; small is the point


@pytest.mark.skipif(shutil.which("node") is None, reason="needs node to run the function's JavaScript")
@pytest.mark.parametrize("query, has_version", [
    ({"v": {"value": "3f2a9c"}, "w": {"value": "1"}}, True),
    ({"v": {"value": "3f2a9c", "multiValue": [{"value": "3f2a9c"}, {"value": "0"}]}}, True),
    ({"w": {"value": "1"}}, False),
    ({"v": {"value": ""}}, False),  # `?v=` names no version
    ({}, False),
])
@pytest.mark.parametrize("origin", [None, "", "public, max-age=60", "public, max-age=120"])
def test_the_function_applies_the_same_rule_as_python(query, has_version, origin):
    """CloudFront's runtime is not node, but this code uses nothing either lacks."""
    from infra.cdn import VIEWER_RESPONSE_CODE, viewer_cache_control

    event = {"request": {"querystring": query},
             "response": {"statusCode": 200,
                          "headers": {} if origin is None else {"cache-control": {"value": origin}}}}
    script = f"{VIEWER_RESPONSE_CODE}\nprocess.stdout.write(JSON.stringify(handler({json.dumps(event)})));"
    result = subprocess.run(["node", "-e", script], capture_output=True, text=True, timeout=30, check=True)
    response = json.loads(result.stdout)
    assert response["statusCode"] == 200
    assert response["headers"]["cache-control"] == {"value": viewer_cache_control(has_version, origin)}


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
