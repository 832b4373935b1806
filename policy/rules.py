"""The guardrails, as pure functions over a list of resources, so that they are unit-testable.

Each rule takes every resource of a stack (type, logical name, properties, and which resources
each property depends on) and returns violation messages. `__main__.py` wires them into a Pulumi
policy pack; the tests run them against good and bad inputs and against our own program.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from typing import Any, Callable

BUCKET = "aws:s3/bucket:Bucket"
PUBLIC_ACCESS_BLOCK = "aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock"
BUCKET_POLICY = "aws:s3/bucketPolicy:BucketPolicy"
OBJECT_LOCK = "aws:s3/bucketObjectLockConfiguration:BucketObjectLockConfiguration"
NOTIFICATION = "aws:s3/bucketNotification:BucketNotification"
SUBSCRIPTION = "aws:sns/topicSubscription:TopicSubscription"
FUNCTION = "aws:lambda/function:Function"
ROLE = "aws:iam/role:Role"
ROLE_POLICY = "aws:iam/rolePolicy:RolePolicy"
POLICY = "aws:iam/policy:Policy"
ATTACHMENT = "aws:iam/rolePolicyAttachment:RolePolicyAttachment"
PUBLIC_ACLS = {"public-read", "public-read-write", "authenticated-read"}
BLOCKS = ("blockPublicAcls", "blockPublicPolicy", "ignorePublicAcls", "restrictPublicBuckets")
WRITE_ACTIONS = ("s3:PutObject", "s3:DeleteObject")


@dataclass
class Resource:
    type: str
    name: str
    props: dict[str, Any]
    depends_on: dict[str, list[str]] = field(default_factory=dict)  # property -> names of resources

    def refers_to(self, prop: str, target: "Resource") -> bool:
        """Does property `prop` point at `target`, by dependency (preview) or by value (update)?"""
        if target.name in self.depends_on.get(prop, []):
            return True
        identities = {target.props.get(k) for k in ("id", "bucket", "arn", "name")} - {None}
        return any(v in identities for v in _strings(self.props.get(prop)))


@dataclass(frozen=True)
class Rule:
    name: str
    description: str
    check: Callable[[list[Resource]], list[str]]


def _statements(policy: Any) -> list[dict] | None:
    """The statements of a policy document, or None when it is not known yet (preview)."""
    if isinstance(policy, str):
        try:
            policy = json.loads(policy)
        except ValueError:
            return None
    if not isinstance(policy, dict):
        return None
    statements = policy.get("Statement", [])
    return [statements] if isinstance(statements, dict) else list(statements)


def _strings(value: Any) -> list[str]:
    """Every string inside a property value (lists of objects such as a notification's topics)."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for v in value.values() for s in _strings(v)]
    if isinstance(value, list):
        return [s for v in value for s in _strings(v)]
    return []


def _list(value: Any) -> list:
    return value if isinstance(value, list) else [value] if value is not None else []


def _of(resources: list[Resource], kind: str) -> list[Resource]:
    return [r for r in resources if r.type == kind]


def no_public_buckets(resources: list[Resource]) -> list[str]:
    violations = []
    blocks = _of(resources, PUBLIC_ACCESS_BLOCK)
    for bucket in _of(resources, BUCKET):
        if bucket.props.get("acl") in PUBLIC_ACLS:
            violations.append(f"bucket {bucket.name} has the public ACL {bucket.props['acl']!r}")
        mine = [b for b in blocks if b.refers_to("bucket", bucket)]
        if not mine:
            violations.append(f"bucket {bucket.name} has no public access block")
        for block in mine:
            off = [k for k in BLOCKS if block.props.get(k) is not True]
            if off:
                violations.append(f"bucket {bucket.name}: public access block leaves {', '.join(off)} off")
    for policy in _of(resources, BUCKET_POLICY):
        for statement in _statements(policy.props.get("policy")) or []:
            principal = statement.get("Principal")
            anyone = principal == "*" or (isinstance(principal, dict) and "*" in _list(principal.get("AWS")))
            if statement.get("Effect") == "Allow" and anyone and not statement.get("Condition"):
                violations.append(f"bucket policy {policy.name} allows anyone: {statement.get('Sid', statement)}")
    return violations


def no_broad_s3_grants(resources: list[Resource]) -> list[str]:
    violations = []
    for resource in resources:
        if resource.type not in (ROLE_POLICY, POLICY, BUCKET_POLICY):
            continue
        for statement in _statements(resource.props.get("policy")) or []:
            if statement.get("Effect") != "Allow":
                continue
            actions = _list(statement.get("Action"))
            if any(a in ("*", "s3:*") for a in actions):
                violations.append(f"{resource.name} grants {actions} (name the actions it needs)")
            if any(str(a).startswith("s3:") for a in actions) and "*" in _list(statement.get("Resource")):
                violations.append(f"{resource.name} grants {actions} on Resource \"*\" (name the buckets)")
    return violations


def _allows(statements: list[dict], action: str, resource_arn: str) -> bool:
    def matches(statement: dict) -> bool:
        return (any(fnmatchcase(action, a) for a in _list(statement.get("Action")))
                and any(fnmatchcase(resource_arn, r) for r in _list(statement.get("Resource"))))

    return (any(s.get("Effect") == "Allow" and matches(s) for s in statements)
            and not any(s.get("Effect") == "Deny" and matches(s) for s in statements))


def functions_cannot_write_their_trigger(resources: list[Resource]) -> list[str]:
    """A function notified by a bucket must not be able to write into it: that loops forever."""
    violations = []
    for notification in _of(resources, NOTIFICATION):
        triggering = [b for b in _of(resources, BUCKET) if notification.refers_to("bucket", b)]
        topics = [r for r in resources if r.type == "aws:sns/topic:Topic" and notification.refers_to("topics", r)]
        subscribed = [s for s in _of(resources, SUBSCRIPTION) if any(s.refers_to("topic", t) for t in topics)]
        functions = [f for f in _of(resources, FUNCTION)
                     if any(s.refers_to("endpoint", f) for s in subscribed) or notification.refers_to("lambdaFunctions", f)]
        for function in functions:
            roles = [r for r in _of(resources, ROLE) if function.refers_to("role", r)]
            statements = [s for p in _of(resources, ROLE_POLICY) if any(p.refers_to("role", r) for r in roles)
                          for s in _statements(p.props.get("policy")) or []]
            for attachment in _of(resources, ATTACHMENT):
                if any(attachment.refers_to("role", r) for r in roles) and any(
                        word in str(attachment.props.get("policyArn")) for word in ("S3FullAccess", "AdministratorAccess")):
                    violations.append(f"function {function.name} has {attachment.props['policyArn']} attached")
            for bucket in triggering:
                name = bucket.props.get("bucket")
                for action in WRITE_ACTIONS:
                    if name and _allows(statements, action, f"arn:aws:s3:::{name}/uploads/images/original/x"):
                        violations.append(f"function {function.name} may {action} into {bucket.name}, "
                                          "the bucket that triggers it")
    return violations


def backup_has_object_lock(resources: list[Resource]) -> list[str]:
    violations = []
    backups = [b for b in _of(resources, BUCKET)
               if (b.props.get("tags") or {}).get("pipeline:role") == "backup" or "backup" in b.name]
    for bucket in backups:
        if bucket.props.get("objectLockEnabled") is not True:
            violations.append(f"backup bucket {bucket.name} is created without object lock")
        locks = [lock for lock in _of(resources, OBJECT_LOCK) if lock.refers_to("bucket", bucket)]
        retention = [((lock.props.get("rule") or {}).get("defaultRetention") or {}) for lock in locks]
        if not any(r.get("mode") and (r.get("days") or r.get("years")) for r in retention):
            violations.append(f"backup bucket {bucket.name} has no default object lock retention")
    return violations


RULES = (
    Rule("no-public-buckets", "No bucket may be public: ACL, public access block or bucket policy.",
         no_public_buckets),
    Rule("no-broad-s3-grants", "No policy may grant s3:* or S3 actions on Resource \"*\".", no_broad_s3_grants),
    Rule("functions-cannot-write-their-trigger", "A function notified by a bucket may not write into it.",
         functions_cannot_write_their_trigger),
    Rule("backup-has-object-lock", "The backup bucket needs object lock with a default retention.",
         backup_has_object_lock),
)


def batch_job_roles_are_scoped(resources: list[Resource]) -> list[str]:
    """A role S3 Batch Operations may take runs jobs over whole buckets: it may invoke only named
    functions (no wildcard) and never write into a bucket that triggers functions."""
    violations = []
    triggering = [b.props.get("bucket") for b in _of(resources, BUCKET)
                  if any(n.refers_to("bucket", b) for n in _of(resources, NOTIFICATION))]
    for role in _of(resources, ROLE):
        trust = _statements(role.props.get("assumeRolePolicy")) or []
        if not any("batchoperations.s3.amazonaws.com" in _strings(s.get("Principal")) for s in trust):
            continue
        statements = [s for p in _of(resources, ROLE_POLICY) if p.refers_to("role", role)
                      for s in _statements(p.props.get("policy")) or []]
        for statement in statements:
            if statement.get("Effect") != "Allow":
                continue
            actions = _list(statement.get("Action"))
            if any(a in ("*", "lambda:*", "lambda:Invoke*", "lambda:InvokeFunction") for a in actions):
                wild = [r for r in _list(statement.get("Resource")) if r == "*" or r.endswith(":function:*")]
                if wild:
                    violations.append(f"batch job role {role.name} may invoke any function ({wild[0]})")
        for name in filter(None, triggering):
            for action in WRITE_ACTIONS:
                if _allows(statements, action, f"arn:aws:s3:::{name}/uploads/images/original/x"):
                    violations.append(f"batch job role {role.name} may {action} into {name}, which triggers functions")
    return violations


RULES = RULES + (
    Rule("batch-job-roles-are-scoped", "A role S3 Batch Operations takes invokes named functions only and never "
         "writes into a bucket that triggers functions.", batch_job_roles_are_scoped),
)
