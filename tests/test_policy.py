"""The guardrails policy pack's rules, against good and bad resources and against our own program."""

from __future__ import annotations

import json
import py_compile

import pytest

from conftest import ROOT
from policy import rules
from policy.rules import Resource
from pulumi_harness import deploy


def bucket(name="uploads", **props):
    return Resource(rules.BUCKET, name, {"bucket": f"{name}-x", "id": f"{name}-x", **props})


def block(target="uploads", **overrides):
    flags = {k: True for k in rules.BLOCKS}
    flags.update(overrides)
    return Resource(rules.PUBLIC_ACCESS_BLOCK, f"{target}-block", {"bucket": f"{target}-x", **flags})


def doc(*statements):
    return json.dumps({"Version": "2012-10-17", "Statement": list(statements)})


def test_no_public_buckets_passes_a_blocked_private_bucket():
    assert rules.no_public_buckets([bucket(), block()]) == []


@pytest.mark.parametrize("resources, expected", [
    ([bucket()], "has no public access block"),
    ([bucket(), block(blockPublicPolicy=False)], "leaves blockPublicPolicy off"),
    ([bucket(acl="public-read"), block()], "public ACL"),
    ([bucket(), block(), Resource(rules.BUCKET_POLICY, "open", {"bucket": "uploads-x", "policy": doc(
        {"Sid": "Everyone", "Effect": "Allow", "Principal": "*", "Action": "s3:GetObject",
         "Resource": "arn:aws:s3:::uploads-x/*"})})], "allows anyone"),
])
def test_no_public_buckets_catches(resources, expected):
    assert any(expected in v for v in rules.no_public_buckets(resources))


def test_a_public_access_block_found_through_a_preview_dependency():
    pending = Resource(rules.PUBLIC_ACCESS_BLOCK, "b", {k: True for k in rules.BLOCKS} | {"bucket": None},
                       {"bucket": ["uploads"]})
    assert rules.no_public_buckets([bucket(), pending]) == []


@pytest.mark.parametrize("statement", [
    {"Effect": "Allow", "Action": "s3:*", "Resource": "arn:aws:s3:::b/*"},
    {"Effect": "Allow", "Action": "*", "Resource": "arn:aws:s3:::b/*"},
    {"Effect": "Allow", "Action": ["s3:GetObject"], "Resource": "*"},
])
def test_no_broad_s3_grants_catches(statement):
    assert rules.no_broad_s3_grants([Resource(rules.ROLE_POLICY, "p", {"policy": doc(statement)})])


def test_no_broad_s3_grants_allows_denies_and_named_resources():
    good = doc({"Effect": "Deny", "Principal": "*", "Action": "s3:*", "Resource": ["arn:aws:s3:::b", "arn:aws:s3:::b/*"],
                "Condition": {"Bool": {"aws:SecureTransport": "false"}}},
               {"Effect": "Allow", "Action": "s3:GetObject", "Resource": "arn:aws:s3:::b/uploads/*"})
    assert rules.no_broad_s3_grants([Resource(rules.BUCKET_POLICY, "p", {"policy": good})]) == []


def trigger_graph(policy_statements):
    uploads = bucket()
    topic = Resource("aws:sns/topic:Topic", "topic", {"arn": "arn:aws:sns:eu-west-1:1:t"})
    notification = Resource(rules.NOTIFICATION, "n", {"bucket": "uploads-x", "topics": [{"topicArn": "arn:aws:sns:eu-west-1:1:t"}]},
                            {"topics": ["topic"]})
    role = Resource(rules.ROLE, "role", {"id": "role-1", "name": "role-1"})
    function = Resource(rules.FUNCTION, "resize", {"arn": "arn:aws:lambda:eu-west-1:1:function:resize", "role": "arn:r"},
                        {"role": ["role"]})
    subscription = Resource(rules.SUBSCRIPTION, "s", {"topic": "arn:aws:sns:eu-west-1:1:t", "protocol": "lambda",
                                                      "endpoint": "arn:aws:lambda:eu-west-1:1:function:resize"})
    policy = Resource(rules.ROLE_POLICY, "p", {"role": "role-1", "policy": doc(*policy_statements)})
    return [uploads, topic, notification, role, function, subscription, policy]


def test_a_function_that_could_write_its_trigger_bucket_is_caught():
    graph = trigger_graph([{"Effect": "Allow", "Action": ["s3:GetObject", "s3:PutObject"],
                            "Resource": "arn:aws:s3:::uploads-x/*"}])
    assert any("may s3:PutObject into uploads" in v for v in rules.functions_cannot_write_their_trigger(graph))


def test_a_function_that_only_reads_its_trigger_bucket_passes():
    graph = trigger_graph([{"Effect": "Allow", "Action": "s3:GetObject", "Resource": "arn:aws:s3:::uploads-x/*"},
                           {"Effect": "Allow", "Action": "s3:PutObject", "Resource": "arn:aws:s3:::processed-x/*"}])
    assert rules.functions_cannot_write_their_trigger(graph) == []


def test_backup_without_object_lock_is_caught_and_with_it_passes():
    backup = Resource(rules.BUCKET, "backup", {"bucket": "backup-x", "tags": {"pipeline:role": "backup"}})
    assert len(rules.backup_has_object_lock([backup])) == 2
    locked = Resource(rules.BUCKET, "backup", {"bucket": "backup-x", "objectLockEnabled": True,
                                               "tags": {"pipeline:role": "backup"}})
    lock = Resource(rules.OBJECT_LOCK, "lock", {"bucket": "backup-x",
                                                "rule": {"defaultRetention": {"mode": "GOVERNANCE", "days": 7}}})
    assert rules.backup_has_object_lock([locked, lock]) == []


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
