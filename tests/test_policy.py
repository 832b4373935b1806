"""The guardrails policy pack's rules, against good and bad resources and against our own program."""

from __future__ import annotations

import json
import py_compile
import runpy

import pulumi_policy
import pytest
from pulumi_policy.proxy import UNKNOWN_STRING_VALUE, unknown_checking_proxy

from conftest import ROOT
from policy import rules
from policy.rules import Resource
from pulumi_harness import deploy

ACCOUNT = "123456789012"
DISTRIBUTION = f"arn:aws:cloudfront::{ACCOUNT}:distribution/E2EXAMPLE0CDN"


def bucket(name="uploads", **props):
    return Resource(rules.BUCKET, name, {"bucket": f"{name}-x", "id": f"{name}-x", **props})


def block(target="uploads", **overrides):
    flags = {k: True for k in rules.BLOCKS}
    flags.update(overrides)
    return Resource(rules.PUBLIC_ACCESS_BLOCK, f"{target}-block", {"bucket": f"{target}-x", **flags})


def doc(*statements):
    return json.dumps({"Version": "2012-10-17", "Statement": list(statements)})


def bucket_policy(*statements, name="open"):
    return Resource(rules.BUCKET_POLICY, name, {"bucket": "uploads-x", "policy": doc(*statements)})


def allow(action, resource, **more):
    return {"Effect": "Allow", "Action": action, "Resource": resource, **more}


def test_no_public_buckets_passes_a_blocked_private_bucket():
    assert rules.no_public_buckets([bucket(), block()]) == []


@pytest.mark.parametrize("resources, expected", [
    ([bucket()], "bucket uploads has no public access block"),
    ([bucket(), block(blockPublicPolicy=False)], "bucket uploads: public access block leaves blockPublicPolicy off"),
    ([bucket(), block(blockPublicAcls=None, restrictPublicBuckets=False)],
     "leaves blockPublicAcls, restrictPublicBuckets off"),
    ([bucket(acl="public-read"), block()], "bucket uploads has the public ACL 'public-read'"),
    ([bucket(), block(), bucket_policy({"Sid": "Everyone", "Effect": "Allow", "Principal": "*",
                                        "Action": "s3:GetObject", "Resource": "arn:aws:s3:::uploads-x/*"})],
     "bucket policy open allows anyone: Everyone"),
])
def test_no_public_buckets_catches(resources, expected):
    assert any(expected in v for v in rules.no_public_buckets(resources))


@pytest.mark.parametrize("identity", ["id", "bucket", "arn", "name"])
def test_a_property_refers_to_a_resource_by_any_of_its_identities(identity):
    target = Resource(rules.ROLE, "role", {identity: "role-1", "other": "role-2"})
    assert Resource(rules.ROLE_POLICY, "p", {"role": ["role-1"]}).refers_to("role", target)
    assert not Resource(rules.ROLE_POLICY, "p", {"role": "role-2", "other": "role-1"}).refers_to("role", target)


def test_a_public_access_block_found_through_a_preview_dependency():
    pending = Resource(rules.PUBLIC_ACCESS_BLOCK, "b", {k: True for k in rules.BLOCKS} | {"bucket": None},
                       {"bucket": ["uploads"]})
    assert rules.no_public_buckets([bucket(), pending]) == []


def public_read(principal="*", condition=None, **more):
    statement = {"Sid": "Read", "Effect": "Allow", "Principal": principal, "Action": "s3:GetObject",
                 "Resource": "arn:aws:s3:::uploads-x/*", **more}
    return statement | ({"Condition": condition} if condition else {})


# Public grants that today's rule lets through: a condition that does not restrict who calls,
# "*" in other principal forms, everyone-but, and a service acting for any of its customers.
@pytest.mark.parametrize("statement", [
    public_read({"AWS": "*"}, {"Bool": {"aws:SecureTransport": "true"}}),
    public_read({"AWS": ["*"]}, {"StringLike": {"s3:prefix": "uploads/*"}}),
    public_read("*", {"StringLike": {"aws:SourceArn": "*"}}),
    public_read("*", {"StringLike": {"aws:SourceAccount": ["123456789012", "*"]}}),
    public_read("*", {"ArnLike": {"aws:SourceArn": "arn:aws:cloudfront::*:distribution/*"}}),
    public_read("*", {"ArnLike": {"aws:SourceArn": "arn:aws:s3:::uploads*"}}),
    public_read("*", {"ArnLike": {"aws:PrincipalArn": "arn:aws:iam::12345678901?:role/x"}}),
    public_read("*", {"ArnLike": {"aws:PrincipalArn": "arn:aws:iam:*"}}),
    public_read("*", {"StringNotEquals": {"aws:SourceAccount": ACCOUNT}}),
    public_read("*", {"StringEqualsIfExists": {"aws:SourceArn": DISTRIBUTION}}),
    public_read("*", {"ForAllValues:StringEquals": {"aws:PrincipalOrgID": "o-abc123"}}),
    public_read("*", {"Null": {"aws:SourceArn": "false"}}),
    public_read("*", {"StringEquals": {"aws:SourceAccount": []}}),
    public_read("*", {"StringEquals": {"aws:SourceAccount": None}}),
    public_read("*", {"StringEquals": "aws:SourceAccount"}),
    public_read("*", ["aws:SourceAccount"]),
    public_read("*", {"IpAddress": {"aws:SourceIp": "0.0.0.0/0"}}),
    public_read("*", {"IpAddress": {"aws:SourceIp": "::/0"}}),
    public_read("*", {"IpAddress": {"aws:SourceIp": ["203.0.113.0/24", "0.0.0.0/1"]}}),
    public_read("*", {"IpAddress": {"aws:SourceIp": "10.0.0.0/7"}}),
    public_read("*", {"IpAddress": {"aws:SourceIp": "2001:db8::/31"}}),
    public_read("*", {"IpAddress": {"aws:SourceIp": "203.0.113.*"}}),
    public_read("*", {"NotIpAddress": {"aws:SourceIp": "203.0.113.0/24"}}),
    public_read({"CanonicalUser": "*"}),
    public_read({"Federated": "*"}, {"StringEquals": {"s3:ExistingObjectTag/public": "yes"}}),
    public_read(None, NotPrincipal={"AWS": f"arn:aws:iam::{ACCOUNT}:root"}),
    public_read({"Service": "cloudfront.amazonaws.com"}),
    public_read({"Service": "cloudfront.amazonaws.com"}, {"StringEquals": {"aws:SourceArn": "*"}}),
], ids=lambda s: json.dumps({k: s.get(k) for k in ("Principal", "NotPrincipal", "Condition") if k in s}))
def test_public_grants_are_caught(statement):
    violations = rules.no_public_buckets([bucket(), block(), bucket_policy(statement)])
    assert violations == ["bucket policy open allows anyone: Read (no condition restricts who the caller is)"]


def test_a_public_grant_in_the_buckets_own_policy_is_caught():
    inline = bucket(policy=doc(public_read({"AWS": "*"})))
    assert rules.no_public_buckets([inline, block()]) == [
        "bucket policy uploads allows anyone: Read (no condition restricts who the caller is)"]


def test_a_public_grant_without_a_sid_is_shown_whole():
    anonymous = {k: v for k, v in public_read().items() if k != "Sid"}
    (violation,) = rules.no_public_buckets([bucket(), block(), bucket_policy(anonymous)])
    assert "'Principal': '*'" in violation


# Grants that name who may call: CloudFront OAC for one distribution (or the account's), one account,
# organisation, VPC endpoint, network; denies; a particular principal.
@pytest.mark.parametrize("statement", [
    public_read({"Service": "cloudfront.amazonaws.com"}, {"StringEquals": {"AWS:SourceArn": DISTRIBUTION}}),
    public_read({"Service": "cloudfront.amazonaws.com"},
                {"ArnLike": {"aws:SourceArn": f"arn:aws:cloudfront::{ACCOUNT}:distribution/*"}}),
    public_read("*", {"StringEquals": {"aws:SourceAccount": ACCOUNT}}),
    public_read("*", {"stringequals": {"AWS:SOURCEACCOUNT": [ACCOUNT, "210987654321"]}}),
    public_read("*", {"StringEqualsIgnoreCase": {"aws:SourceOwner": ACCOUNT}}),
    public_read("*", {"StringEquals": {"aws:SourceOrgID": "o-abc123"}}),
    public_read("*", {"StringEquals": {"aws:SourceVpc": "vpc-1a2b3c4d"}}),
    public_read("*", {"StringEquals": {"aws:SourceVpce": "vpce-1a2b3c4d"}}),
    public_read("*", {"ArnEquals": {"aws:PrincipalArn": f"arn:aws:iam::{ACCOUNT}:role/reader"}}),
    public_read("*", {"ArnLike": {"aws:PrincipalArn": f"arn:aws:iam::{ACCOUNT}:role/*"}}),
    public_read("*", {"StringLike": {"aws:PrincipalAccount": ACCOUNT}}),
    public_read("*", {"ForAnyValue:StringEquals": {"aws:PrincipalOrgID": "o-abc123"}}),
    public_read("*", {"IpAddress": {"aws:SourceIp": ["203.0.113.0/24", "198.51.100.7"]}}),
    public_read("*", {"IpAddress": {"aws:SourceIp": "10.0.0.0/8"}}),
    public_read("*", {"IpAddress": {"aws:SourceIp": "203.0.113.7/24"}}),
    public_read("*", {"IpAddress": {"aws:SourceIp": "2001:db8::/32"}}),
    public_read("*", {"Bool": {"aws:SecureTransport": "true"}, "StringEquals": {"aws:SourceVpce": "vpce-1a2b3c4d"}}),
    public_read({"CanonicalUser": "79a59df900b949e55d96a1e698fbacedfd6e09d98eacf8f8d5218e7cd47ef2be"}),
    public_read({"AWS": f"arn:aws:iam::{ACCOUNT}:role/reader"}),
    public_read() | {"Effect": "Deny"},
])
def test_grants_to_someone_in_particular_pass(statement):
    assert rules.no_public_buckets([bucket(), block(), bucket_policy(statement)]) == []


def test_the_distributions_grants_pass_every_bucket_rule():
    """Reading the served prefix and listing the bucket (so that a missing key answers 404), for
    CloudFront on behalf of this distribution only: no rule needs an exception for it."""
    from infra.policies import IMAGES, served_bucket_policy

    served = Resource(rules.BUCKET_POLICY, "served", {"bucket": "uploads-x",
                                                       "policy": json.dumps(served_bucket_policy("uploads-x", IMAGES,
                                                                                                 DISTRIBUTION))})
    assert [s["Action"] for s in json.loads(served.props["policy"])["Statement"] if s["Effect"] == "Allow"] == [
        "s3:GetObject", "s3:ListBucket"]
    assert rules.no_public_buckets([bucket(), block(), served]) == []
    assert rules.no_broad_s3_grants([served]) == []


def list_bucket(principal=None, condition=None, resource="arn:aws:s3:::uploads-x"):
    statement = {"Sid": "List", "Effect": "Allow", "Principal": principal or {"Service": "cloudfront.amazonaws.com"},
                 "Action": "s3:ListBucket", "Resource": resource}
    return statement | ({"Condition": condition} if condition else {})


# The same grant made broader: to every distribution (any account's), to anyone, or on every bucket.
@pytest.mark.parametrize("statement, rule, expected", [
    (list_bucket(), rules.no_public_buckets, "bucket policy open allows anyone: List"),
    (list_bucket(condition={"StringEquals": {"AWS:SourceArn": "*"}}), rules.no_public_buckets, "allows anyone: List"),
    (list_bucket(condition={"ArnLike": {"AWS:SourceArn": "arn:aws:cloudfront::*:distribution/*"}}),
     rules.no_public_buckets, "allows anyone: List"),
    (list_bucket(condition={"StringEqualsIfExists": {"AWS:SourceArn": DISTRIBUTION}}), rules.no_public_buckets,
     "allows anyone: List"),
    (list_bucket("*"), rules.no_public_buckets, "allows anyone: List"),
    (list_bucket({"AWS": "*"}, {"Bool": {"aws:SecureTransport": "true"}}), rules.no_public_buckets,
     "allows anyone: List"),
    (list_bucket(condition={"StringEquals": {"AWS:SourceArn": DISTRIBUTION}}, resource="arn:aws:s3:::*"),
     rules.no_broad_s3_grants, "grants s3:ListBucket on arn:aws:s3:::*, which reaches every bucket"),
    (list_bucket(condition={"StringEquals": {"AWS:SourceArn": DISTRIBUTION}}, resource="*"),
     rules.no_broad_s3_grants, "which reaches every bucket"),
])
def test_a_broader_list_grant_is_still_caught(statement, rule, expected):
    violations = rule([bucket(), block(), bucket_policy(statement)])
    assert any(expected in v for v in violations), violations


EVERY_ACTION = "p grants every S3 action"
EVERY_BUCKET = "which reaches every bucket (name the buckets)"


# Broad grants that today's rule lets through: other spellings of s3:*, NotAction, and resources
# that reach every bucket without being "*".
@pytest.mark.parametrize("statement, expected", [
    (allow("S3:*", "arn:aws:s3:::b/*"), f"{EVERY_ACTION} with S3:* (name the actions it needs)"),
    (allow(["s3:GetObject", "s3:?*"], "arn:aws:s3:::b/*"), EVERY_ACTION),
    ({"Effect": "Allow", "NotAction": "iam:*", "Resource": "arn:aws:s3:::b/*"},
     f"{EVERY_ACTION} with {{'NotAction': 'iam:*'}}"),
    ({"Effect": "Allow", "NotAction": ["s3:GetObject"], "Resource": "arn:aws:s3:::b/*"}, EVERY_ACTION),
    (allow("s3:GetObject", "arn:aws:s3:::*"), f"p grants s3:GetObject on arn:aws:s3:::*, {EVERY_BUCKET}"),
    (allow("s3:GetObject", "arn:aws:s3:::*/*"), EVERY_BUCKET),
    (allow("s3:GetObject", "arn:*:s3:::*"), EVERY_BUCKET),
    (allow("s3:GetObject", "arn:aws-cn:s3:::*"), EVERY_BUCKET),
    (allow("s3:GetObject", "arn:aws-us-gov:s3:::*/*"), EVERY_BUCKET),
    (allow("s3:GetObject", ["arn:aws:s3:::b/*", "arn:aws:s3:::?*/uploads/*"]), EVERY_BUCKET),
    (allow("S3:GetObject", "*"), EVERY_BUCKET),
    (allow("*Object", "*"), EVERY_BUCKET),
    ({"Effect": "Allow", "Action": "s3:GetObject", "NotResource": "arn:aws:s3:::b/*"},
     f"p grants s3:GetObject on {{'NotResource': 'arn:aws:s3:::b/*'}}, {EVERY_BUCKET}"),
    ({"Effect": "Allow", "NotAction": "iam:*", "NotResource": "arn:aws:s3:::b/*"}, EVERY_BUCKET),
    # caught today too
    (allow("s3:*", "arn:aws:s3:::b/*"), f"{EVERY_ACTION} with s3:* (name the actions it needs)"),
    (allow("*", "arn:aws:s3:::b/*"), f"{EVERY_ACTION} with * (name the actions it needs)"),
    (allow(["s3:GetObject"], "*"), f"p grants ['s3:GetObject'] on *, {EVERY_BUCKET}"),
    (allow("s3:Get*", "*"), EVERY_BUCKET),
])
def test_broad_grants_are_caught(statement, expected):
    violations = rules.no_broad_s3_grants([Resource(rules.ROLE_POLICY, "p", {"policy": doc(statement)})])
    assert any(expected in v for v in violations), violations


@pytest.mark.parametrize("resource, expected", [
    (Resource(rules.ROLE, "role", {"inlinePolicies": [{"name": "s3", "policy": doc(allow("s3:*", "*"))}]}),
     "role inline policy s3 grants every S3 action"),
    (Resource(rules.ATTACHMENT, "full", {"role": "role-1", "policyArn": "arn:aws:iam::aws:policy/AmazonS3FullAccess"}),
     "full (arn:aws:iam::aws:policy/AmazonS3FullAccess) grants ['s3:*', 's3-object-lambda:*'] on *"),
    (Resource(rules.ROLE, "role", {"managedPolicyArns": ["arn:aws:iam::aws:policy/AWSLambdaExecute"]}),
     "role (arn:aws:iam::aws:policy/AWSLambdaExecute) grants ['s3:GetObject', 's3:PutObject'] on arn:aws:s3:::*"),
    (bucket(policy=doc(allow("s3:*", "arn:aws:s3:::uploads-x/*", Principal={"AWS": ACCOUNT}))),
     "uploads grants every S3 action"),
])
def test_broad_grants_are_caught_wherever_the_document_is(resource, expected):
    assert any(expected in v for v in rules.no_broad_s3_grants([resource])), rules.no_broad_s3_grants([resource])


def test_no_broad_s3_grants_allows_denies_and_named_resources():
    good = doc({"Effect": "Deny", "Principal": "*", "Action": "s3:*", "Resource": ["arn:aws:s3:::b", "arn:aws:s3:::b/*"],
                "Condition": {"Bool": {"aws:SecureTransport": "false"}}},
               {"Effect": "Allow", "Action": "s3:GetObject", "Resource": "arn:aws:s3:::b/uploads/*"})
    assert rules.no_broad_s3_grants([Resource(rules.BUCKET_POLICY, "p", {"policy": good})]) == []


@pytest.mark.parametrize("statement", [
    allow(["s3:GetObject", "S3:PutObject"], ["arn:aws:s3:::b/*", "arn:aws:s3:::b"]),
    allow("s3:Get*", "arn:aws:s3:::b/uploads/*"),
    allow("s3:*Object", "arn:aws:s3:::b*/*"),
    allow("sqs:*", "*"),
    allow("sqs:SendMessage", "*"),
    {"Effect": "Allow", "NotAction": "s3:*", "Resource": "arn:aws:logs:eu-west-1:1:*"},
    {"Effect": "Deny", "NotAction": "s3:GetObject", "NotResource": "arn:aws:s3:::b/*"},
    {"Effect": "Allow", "Action": "s3:GetObject"},
])
def test_no_broad_s3_grants_passes_named_actions_on_named_buckets(statement):
    assert rules.no_broad_s3_grants([Resource(rules.ROLE_POLICY, "p", {"policy": doc(statement)})]) == []


def test_other_services_resource_policies_grant_no_s3():
    queue_policy = Resource("aws:sqs/queuePolicy:QueuePolicy", "q", {"policy": doc(allow("*", "*"))})
    assert rules.no_broad_s3_grants([queue_policy]) == []


def test_every_statement_of_a_document_is_judged():
    document = doc({"Effect": "Deny", "Action": "s3:DeleteBucket", "Resource": "*"}, allow("s3:*", "arn:aws:s3:::b/*"))
    assert rules.no_broad_s3_grants([Resource(rules.POLICY, "p", {"policy": document})]) == [
        "p grants every S3 action with s3:* (name the actions it needs)"]


def test_an_unknown_or_unjudged_managed_policy_is_no_broad_grant():
    arns = ["arn:aws:iam::aws:policy/service-role/AWSLambdaBasicExecutionRole",
            f"arn:aws:iam::{ACCOUNT}:policy/AmazonS3FullAccess", "arn:aws:iam::aws:policy/AmazonS3FullAccessNot"]
    assert rules.no_broad_s3_grants([Resource(rules.ROLE, "role", {"managedPolicyArns": arns})]) == []


def trigger_graph(policy_statements=(), role_props=None, extra=()):
    uploads = bucket()
    topic = Resource("aws:sns/topic:Topic", "topic", {"arn": "arn:aws:sns:eu-west-1:1:t"})
    notification = Resource(rules.NOTIFICATION, "n", {"bucket": "uploads-x", "topics": [{"topicArn": "arn:aws:sns:eu-west-1:1:t"}]},
                            {"topics": ["topic"]})
    role = Resource(rules.ROLE, "role", {"id": "role-1", "name": "role-1", **(role_props or {})})
    function = Resource(rules.FUNCTION, "resize", {"arn": "arn:aws:lambda:eu-west-1:1:function:resize", "role": "arn:r"},
                        {"role": ["role"]})
    subscription = Resource(rules.SUBSCRIPTION, "s", {"topic": "arn:aws:sns:eu-west-1:1:t", "protocol": "lambda",
                                                      "endpoint": "arn:aws:lambda:eu-west-1:1:function:resize"})
    policy = Resource(rules.ROLE_POLICY, "p", {"role": "role-1", "policy": doc(*policy_statements)})
    return [uploads, topic, notification, role, function, subscription, policy, *extra]


def test_a_function_that_could_write_its_trigger_bucket_is_caught():
    graph = trigger_graph([{"Effect": "Allow", "Action": ["s3:GetObject", "s3:PutObject"],
                            "Resource": "arn:aws:s3:::uploads-x/*"}])
    assert rules.functions_cannot_write_their_trigger(graph) == [
        "function resize may s3:PutObject into uploads, the bucket that triggers it (allowed by p)"]


def test_a_function_that_only_reads_its_trigger_bucket_passes():
    graph = trigger_graph([{"Effect": "Allow", "Action": "s3:GetObject", "Resource": "arn:aws:s3:::uploads-x/*"},
                           {"Effect": "Allow", "Action": "s3:PutObject", "Resource": "arn:aws:s3:::processed-x/*"}])
    assert rules.functions_cannot_write_their_trigger(graph) == []


UPLOADS = "arn:aws:s3:::uploads-x/*"
DENY_WRITES = {"Effect": "Deny", "Action": ["s3:PutObject", "s3:DeleteObject", "s3:DeleteObjectVersion"],
               "Resource": ["arn:aws:s3:::uploads-x", UPLOADS]}


# Writes into the trigger bucket that today's rule lets through: other spellings of the action,
# NotAction/NotResource, a grant on part of the bucket, a Deny that might not apply.
@pytest.mark.parametrize("statements, action", [
    ([allow("S3:PutObject", UPLOADS)], "s3:PutObject"),
    ([allow("s3:putobject", UPLOADS)], "s3:PutObject"),
    ([allow("S3:Put*", UPLOADS)], "s3:PutObject"),
    ([allow("s3:deleteobject?ersion", UPLOADS)], "s3:DeleteObjectVersion"),
    ([{"Effect": "Allow", "NotAction": "iam:*", "Resource": "*"}], "s3:PutObject"),
    ([{"Effect": "Allow", "NotAction": ["s3:GetObject", "s3:PutObject"], "Resource": UPLOADS}], "s3:DeleteObject"),
    ([{"Effect": "Allow", "Action": "s3:PutObject", "NotResource": "arn:aws:s3:::processed-x/*"}], "s3:PutObject"),
    ([allow("s3:PutObject", "arn:aws:s3:::uploads-x/uploads/images/original/photo*")], "s3:PutObject"),
    ([allow("s3:PutObject", "arn:aws:s3:::uploads-?/uploads/images/original/??.jpg")], "s3:PutObject"),
    ([allow("s3:PutObject", UPLOADS), DENY_WRITES | {"Condition": {"Bool": {"aws:SecureTransport": "false"}}}],
     "s3:PutObject"),
    ([allow("s3:PutObject", UPLOADS), DENY_WRITES | {"Resource": "arn:aws:s3:::uploads-x/uploads/*"}], "s3:PutObject"),
    # caught today too: a Deny that covers some of the writes only, or another bucket (ARNs are case-sensitive)
    ([allow("s3:PutObject", UPLOADS), DENY_WRITES | {"Resource": "arn:aws:s3:::Uploads-x/*"}], "s3:PutObject"),
    ([allow("s3:PutObject", UPLOADS), DENY_WRITES | {"Resource": "arn:aws:s3:::uploads-x/?"}], "s3:PutObject"),
    ([allow("s3:PutObject", UPLOADS), DENY_WRITES | {"Resource": "arn:aws:s3:::uploads-x/?????????"}], "s3:PutObject"),
    ([allow("s3:PutObject", UPLOADS), DENY_WRITES | {"Action": "s3:Delete*"}], "s3:PutObject"),
])
def test_writes_into_the_trigger_bucket_are_caught(statements, action):
    violations = rules.functions_cannot_write_their_trigger(trigger_graph(statements))
    assert f"function resize may {action} into uploads, the bucket that triggers it (allowed by p)" in violations


CUSTOMER_POLICY = Resource(rules.POLICY, "writer", {"arn": f"arn:aws:iam::{ACCOUNT}:policy/writer",
                                                    "policy": doc(allow("s3:PutObject", UPLOADS))})


def managed(name):
    return f"arn:aws:iam::aws:policy/{name}"


# Statements that reach the function's role other than through a RolePolicy.
@pytest.mark.parametrize("role_props, extra, where", [
    ({"inlinePolicies": [{"name": "write", "policy": doc(allow("s3:PutObject", UPLOADS))}]}, [],
     "role inline policy write"),
    ({}, [CUSTOMER_POLICY, Resource(rules.ATTACHMENT, "attach", {"role": "role-1", "policyArn": CUSTOMER_POLICY.props["arn"]})],
     "writer"),
    ({}, [CUSTOMER_POLICY, Resource(rules.ATTACHMENT, "attach", {"role": None, "policyArn": None},
                                    {"role": ["role"], "policyArn": ["writer"]})], "writer"),
    ({"managedPolicyArns": [CUSTOMER_POLICY.props["arn"]]}, [CUSTOMER_POLICY], "writer"),
    ({}, [CUSTOMER_POLICY, Resource(rules.POLICY_ATTACHMENT, "attach", {"roles": ["role-1"],
                                                                         "policyArn": CUSTOMER_POLICY.props["arn"]})],
     "writer"),
    ({}, [CUSTOMER_POLICY, Resource(rules.EXCLUSIVE_ATTACHMENTS, "attach", {
        "roleName": "role-1", "policyArns": [CUSTOMER_POLICY.props["arn"]]})], "writer"),
    ({}, [Resource(rules.ATTACHMENT, "attach", {"role": "role-1", "policyArn": managed("AdministratorAccess")})],
     f"attach ({managed('AdministratorAccess')})"),  # caught today too
    ({}, [Resource(rules.ATTACHMENT, "attach", {"role": "role-1", "policyArn": managed("PowerUserAccess")})],
     f"attach ({managed('PowerUserAccess')})"),
    ({}, [Resource(rules.ATTACHMENT, "attach", {"role": "role-1", "policyArn": managed("AWSLambdaExecute")})],
     f"attach ({managed('AWSLambdaExecute')})"),
    ({"managedPolicyArns": ["arn:aws-cn:iam::aws:policy/AmazonS3FullAccess"]}, [],
     "role (arn:aws-cn:iam::aws:policy/AmazonS3FullAccess)"),
])
def test_every_statement_that_reaches_the_role_is_judged(role_props, extra, where):
    violations = rules.functions_cannot_write_their_trigger(trigger_graph(role_props=role_props, extra=extra))
    assert f"function resize may s3:PutObject into uploads, the bucket that triggers it (allowed by {where})" in violations


@pytest.mark.parametrize("statements, extra", [
    ([allow("s3:PutObject", UPLOADS), DENY_WRITES], []),
    ([allow("s3:*", "*"), DENY_WRITES | {"Action": "S3:Put*"}, DENY_WRITES | {"Action": "s3:delete*"}], []),
    ([allow("s3:*", "*"), {"Effect": "Deny", "Action": "s3:*", "NotResource": "arn:aws:s3:::processed-x/*"}], []),
    ([{"Effect": "Allow", "NotAction": "iam:*", "Resource": "*"}, {"Effect": "Deny", "NotAction": "s3:Get*",
                                                                   "Resource": "arn:aws:s3:::uploads-x*"}], []),
    ([allow("s3:PutObject", "arn:aws:s3:::uploads-x-other/*")], []),
    ([allow("s3:PutObject", "arn:aws:s3:::uploads-x")], []),
    ([allow("s3:PutObject", "arn:aws:s3:::uploads-x/")], []),
    ([allow("s3:PutObject", "arn:aws:s3:::UPLOADS-X/*")], []),  # ARNs are case-sensitive
    ([allow("s3:PutObject", "arn:aws:s3:::uploads-x/line\nbreak"), DENY_WRITES], []),
    ([allow("s3:GetObject", UPLOADS), {"Effect": "Allow", "NotAction": "s3:*", "Resource": "*"}], []),
    ([allow(["s3:GetObject", "s3:ListBucket"], [UPLOADS, "arn:aws:s3:::uploads-x"])], []),
    ([DENY_WRITES], [Resource(rules.ATTACHMENT, "attach", {"role": "role-1",
                                                          "policyArn": managed("AmazonS3FullAccess")})]),
    ([], [Resource(rules.ATTACHMENT, "attach", {"role": "role-1",
                                               "policyArn": managed("service-role/AWSLambdaBasicExecutionRole")})]),
    ([], [Resource(rules.ATTACHMENT, "attach", {"role": "other-role", "policyArn": managed("AdministratorAccess")}),
          Resource(rules.ROLE_POLICY, "other", {"role": "other-role", "policy": doc(allow("s3:*", "*"))})]),
    ([], [Resource(rules.ROLE_POLICY, "pending", {"role": "role-1", "policy": None})]),
])
def test_a_function_denied_or_not_granted_writes_passes(statements, extra):
    assert rules.functions_cannot_write_their_trigger(trigger_graph(statements, extra=extra)) == []


def test_the_trigger_bucket_is_known_by_its_arn_when_it_has_one():
    graph = trigger_graph([allow("s3:PutObject", "arn:aws-cn:s3:::uploads-x/*")])
    graph[0] = bucket(arn="arn:aws-cn:s3:::uploads-x")
    assert rules.functions_cannot_write_their_trigger(graph)
    graph[0] = bucket(bucket=None)
    assert rules.functions_cannot_write_their_trigger(graph) == []


def test_a_function_notified_directly_by_the_bucket_is_judged_too():
    graph = trigger_graph([allow("s3:PutObject", UPLOADS)])
    graph[2] = Resource(rules.NOTIFICATION, "n", {"bucket": "uploads-x", "lambdaFunctions": [
        {"lambdaFunctionArn": "arn:aws:lambda:eu-west-1:1:function:resize"}]})
    assert rules.functions_cannot_write_their_trigger(graph) == [
        "function resize may s3:PutObject into uploads, the bucket that triggers it (allowed by p)"]


def test_a_function_subscribed_to_another_topic_is_not_notified_by_the_bucket():
    graph = trigger_graph([allow("s3:PutObject", UPLOADS)])
    graph[1] = Resource("aws:sns/topic:Topic", "topic", {"arn": "arn:aws:sns:eu-west-1:1:elsewhere"})
    graph[2] = Resource(rules.NOTIFICATION, "n", {"bucket": "uploads-x", "topics": []})
    graph[5] = Resource(rules.SUBSCRIPTION, "s", {"topic": "arn:aws:sns:eu-west-1:1:elsewhere", "protocol": "lambda",
                                                  "endpoint": "arn:aws:lambda:eu-west-1:1:function:resize"})
    assert rules.functions_cannot_write_their_trigger(graph) == []


def lock(**retention):
    return Resource(rules.OBJECT_LOCK, "lock", {"bucket": "vault-x", "rule": {"defaultRetention": retention}})


@pytest.mark.parametrize("name, tags", [("vault", {"pipeline:role": "backup"}), ("backup-vault", None)])
def test_backup_without_object_lock_is_caught(name, tags):
    backup = Resource(rules.BUCKET, name, {"bucket": "vault-x", "tags": tags})
    assert rules.backup_has_object_lock([backup]) == [f"backup bucket {name} is created without object lock",
                                                      f"backup bucket {name} has no default object lock retention"]
    backup.props["objectLockEnabled"] = True
    for retention in ({"mode": "GOVERNANCE"}, {"days": 7}, {"mode": "COMPLIANCE", "days": 0}):
        assert rules.backup_has_object_lock([backup, lock(**retention)]) == [
            f"backup bucket {name} has no default object lock retention"]
    for retention in ({"mode": "GOVERNANCE", "days": 7}, {"mode": "COMPLIANCE", "years": 1}):
        assert rules.backup_has_object_lock([backup, lock(**retention)]) == []


def test_only_backup_buckets_need_object_lock():
    assert rules.backup_has_object_lock([bucket(), bucket("media", tags={"pipeline:role": "processed"})]) == []


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_our_own_program_passes_every_rule(stack):
    deployment = deploy(stack)
    resources = [Resource(r.type, r.name, {**r.outputs, "id": r.outputs.get("id", r.outputs.get("bucket"))})
                 for r in deployment.resources]
    for rule in rules.RULES:
        assert rule.check(resources) == [], rule.name
    # and the rules do look at it: loosen the program and they fire
    for resource in resources:
        if resource.type == rules.BUCKET and resource.props["tags"]["pipeline:role"] == "backup":
            resource.props["objectLockEnabled"] = None
        if resource.type == rules.ROLE_POLICY and resource.name == "functions-resize-s3":
            statements = json.loads(resource.props["policy"])["Statement"]
            statements = [s for s in statements if s["Effect"] == "Allow"]
            statements[0]["Action"] = ["s3:GetObject", "s3:PutObject"]  # ReadOriginals may now write
            resource.props["policy"] = doc(*statements)
    assert rules.backup_has_object_lock(resources)
    assert [v for v in rules.functions_cannot_write_their_trigger(resources) if "functions-resize" in v]


def test_the_pack_entry_point_compiles():
    py_compile.compile(str(ROOT / "policy" / "__main__.py"), doraise=True)


def test_the_pack_judges_a_preview_whose_values_are_not_known_yet(monkeypatch):
    """The SDK hands the pack read-only proxies that raise on a value a preview does not know yet."""
    monkeypatch.setattr(pulumi_policy, "PolicyPack", lambda **_: None)  # it would serve the engine
    monkeypatch.syspath_prepend(str(ROOT / "policy"))
    pack = runpy.run_path(str(ROOT / "policy" / "__main__.py"))

    def resource(kind, name, props, dependencies=None):
        return pulumi_policy.PolicyResource(kind, unknown_checking_proxy(props), name, name, None, None, None, [],
                                            dependencies or {})

    uploads = resource(rules.BUCKET, "uploads", {"bucket": "uploads-x", "arn": UNKNOWN_STRING_VALUE})
    role = resource(rules.ROLE, "role", {"arn": UNKNOWN_STRING_VALUE, "inlinePolicies": [
        {"name": "write", "policy": doc(allow("s3:PutObject", UPLOADS))}]})
    function = resource(rules.FUNCTION, "resize", {"role": UNKNOWN_STRING_VALUE}, {"role": [role]})
    notification = resource(rules.NOTIFICATION, "n", {"bucket": UNKNOWN_STRING_VALUE, "lambdaFunctions": [
        {"lambdaFunctionArn": UNKNOWN_STRING_VALUE, "events": ["s3:ObjectCreated:*"]}]},
        {"bucket": [uploads], "lambdaFunctions": [function]})
    args = pulumi_policy.StackValidationArgs([uploads, role, function, notification], None)
    (rule,) = [r for r in rules.RULES if r.name == "functions-cannot-write-their-trigger"]
    reported = []
    pack["_policy"](rule).validate(args, reported.append)
    assert reported == ["function resize may s3:PutObject into uploads, the bucket that triggers it "
                        "(allowed by role inline policy write)"]
