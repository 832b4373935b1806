"""The guardrails, as pure functions over a list of resources, so that they are unit-testable.

Each rule takes every resource of a stack (type, logical name, properties, and which resources
each property depends on) and returns violation messages. `__main__.py` wires them into a Pulumi
policy pack; the tests run them against good and bad inputs and against our own program.

Policy documents are read with IAM's semantics: action names are case-insensitive, `*` and `?`
are wildcards in actions and ARNs, NotAction/NotResource cover everything they do not name, and
an explicit Deny wins over any Allow, but only a Deny without a condition surely applies.
"""

from __future__ import annotations

import ipaddress
import json
import re
from dataclasses import dataclass, field
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
POLICY_ATTACHMENT = "aws:iam/policyAttachment:PolicyAttachment"
EXCLUSIVE_ATTACHMENTS = "aws:iam/rolePolicyAttachmentsExclusive:RolePolicyAttachmentsExclusive"
PUBLIC_ACLS = {"public-read", "public-read-write", "authenticated-read"}
BLOCKS = ("blockPublicAcls", "blockPublicPolicy", "ignorePublicAcls", "restrictPublicBuckets")
# What creates or removes an object, and so sends the events a function may be notified of.
WRITE_ACTIONS = ("s3:PutObject", "s3:DeleteObject", "s3:DeleteObjectVersion")

# The resources that hold a policy document in their "policy" (a bucket's own is deprecated, not gone).
POLICY_HOLDERS = (ROLE_POLICY, POLICY, BUCKET_POLICY, BUCKET)
# Where a resource names the role it gives permissions to ...
ROLE_PROPERTY = {ROLE_POLICY: "role", ATTACHMENT: "role", POLICY_ATTACHMENT: "roles", EXCLUSIVE_ATTACHMENTS: "roleName"}
# ... and where it names the managed policies it attaches to that role.
ATTACHED_PROPERTY = {ROLE: "managedPolicyArns", ATTACHMENT: "policyArn", POLICY_ATTACHMENT: "policyArn",
                     EXCLUSIVE_ATTACHMENTS: "policyArns"}
# AWS-managed policies are not in the stack: the S3 part of the ones known to reach every bucket.
# Others are not judged. Source: the AWS managed policy reference.
MANAGED_POLICIES = {
    "AdministratorAccess": [{"Effect": "Allow", "Action": "*", "Resource": "*"}],
    "PowerUserAccess": [{"Effect": "Allow", "NotAction": ["iam:*", "organizations:*", "account:*"], "Resource": "*"}],
    "AmazonS3FullAccess": [{"Effect": "Allow", "Action": ["s3:*", "s3-object-lambda:*"], "Resource": "*"}],
    "AWSLambdaExecute": [{"Effect": "Allow", "Action": ["s3:GetObject", "s3:PutObject"], "Resource": "arn:aws:s3:::*"}],
}

# Stands for what a wildcard may match that no policy names: a future action, a stranger's bucket
# (with the longest name a bucket may have).
FILL = "\x00"
STRANGERS_BUCKETS = [f"arn:{partition}:s3:::{FILL * 63}" for partition in ("aws", "aws-cn", "aws-us-gov")]

# Condition keys that say who calls, or on whose behalf a service calls (keys are case-insensitive).
CALLER_KEYS = {"aws:sourcearn", "aws:sourceaccount", "aws:sourceowner", "aws:sourceorgid", "aws:sourcevpc",
               "aws:sourcevpce", "aws:principalarn", "aws:principalaccount", "aws:principalorgid", "aws:sourceip"}
ARN_KEYS = {"aws:sourcearn", "aws:principalarn"}
# Operators that a request without a matching value fails. Not the negated ones, not ...IfExists
# or ForAllValues: (both pass a request without the key), not Null.
NARROWING_OPERATORS = {"stringequals", "stringequalsignorecase", "stringlike", "arnequals", "arnlike", "ipaddress"}
# An address range larger than this is no single organisation's network.
WIDEST_PREFIX = {4: 8, 6: 32}


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
    return [s for s in _list(policy.get("Statement")) if isinstance(s, dict)]


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


def _managed(arn: str) -> dict | None:
    match = re.fullmatch(r"arn:[^:]+:iam::aws:policy/(.+)", arn)
    return {"Statement": MANAGED_POLICIES.get(match.group(1))} if match else None


def _documents(resource: Resource) -> list[tuple[str, dict]]:
    """(where, statement) for every statement a resource holds: its policy, a role's inline policies,
    and the AWS-managed policies it attaches."""
    documents = [(resource.name, resource.props.get("policy"))] if resource.type in POLICY_HOLDERS else []
    documents += [(f"{resource.name} inline policy {p.get('name')}", p.get("policy"))
                  for p in _list(resource.props.get("inlinePolicies")) if isinstance(p, dict)]
    if resource.type in ATTACHED_PROPERTY:
        documents += [(f"{resource.name} ({arn})", _managed(arn))
                      for arn in _strings(resource.props.get(ATTACHED_PROPERTY[resource.type]))]
    return [(where, statement) for where, document in documents for statement in _statements(document) or []]


def _role_statements(resources: list[Resource], role: Resource) -> list[tuple[str, dict]]:
    """Every statement that gives `role` permissions: in the role itself, in role policies, and in
    the policies attached to it (customer-managed ones by their documents)."""
    grants = [role] + [r for r in resources if r.type in ROLE_PROPERTY and r.refers_to(ROLE_PROPERTY[r.type], role)]
    attached = [p for p in _of(resources, POLICY)
                if any(g.refers_to(ATTACHED_PROPERTY[g.type], p) for g in grants if g.type in ATTACHED_PROPERTY)]
    return [s for r in grants + attached for s in _documents(r)]


def _like(pattern: str, value: str) -> bool:
    """IAM's wildcards: `*` matches any run of characters, `?` any one; nothing else is special."""
    regex = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    return re.fullmatch(regex, value, re.DOTALL) is not None


def _covers(statement: dict, element: str, value: str) -> bool:
    """Is `value` among what the statement's Action or Resource (`element`) covers?"""
    fold = str.lower if element == "Action" else str  # action names are case-insensitive, ARNs are not

    def names(key: str) -> bool:
        return any(_like(fold(str(p)), fold(value)) for p in _list(statement.get(key)))

    if element in statement:
        return names(element)
    return f"Not{element}" in statement and not names(f"Not{element}")


def _applies(statement: dict, action: str, arn: str) -> bool:
    return _covers(statement, "Action", action) and _covers(statement, "Resource", arn)


def _allowed_by(statements: list[tuple[str, dict]], action: str, arn: str) -> str | None:
    """Where the request is allowed, unless a Deny surely refuses it (one with a condition might not)."""
    if any(s.get("Effect") == "Deny" and not s.get("Condition") and _applies(s, action, arn) for _, s in statements):
        return None
    return next((where for where, s in statements if s.get("Effect") == "Allow" and _applies(s, action, arn)), None)


def _rests(pattern: str, prefix: str) -> set[str]:
    """What `pattern` still has to match once it has matched `prefix`, in each way it can."""
    positions = {0}
    for char in prefix:
        # a `*` may match nothing: it also stands at whatever follows it
        positions = {j for i in positions for j in range(i, len(pattern) - len(pattern[i:].lstrip("*")) + 1)}
        positions = {i + (pattern[i] != "*") for i in positions if i < len(pattern) and pattern[i] in ("*", "?", char)}
    return {pattern[i:] for i in positions}


def _witnesses(patterns: list[str], prefix: str) -> list[str]:
    """Strings that begin with `prefix` to ask about: one for each way a pattern goes on past it and
    one that no pattern names, each `*` filled short and long (a `?` counts characters). A `?` may
    stay: no pattern can name it but by a wildcard."""
    rests = {"*"} | {rest for pattern in patterns for rest in _rests(pattern, prefix)}
    return sorted({prefix + rest.replace("*", fill) for rest in rests if rest for fill in (FILL, FILL * 9)})


def _names_someone(key: str, value: str) -> bool:
    """Does a condition value (of a caller key) let in only someone in particular?"""
    if key == "aws:sourceip":
        try:
            network = ipaddress.ip_network(value, strict=False)
        except ValueError:
            return False
        return network.prefixlen >= WIDEST_PREFIX[network.version]
    if "*" not in value and "?" not in value:
        return True
    # a wildcard after a named account keeps to that account's resources or principals
    return key in ARN_KEYS and re.match(r"arn:[^:]*:[^:]*:[^:]*:\d{12}:", value) is not None


def _restricts_caller(condition: Any) -> bool:
    """Does the condition keep strangers out? Every test in it must hold, and a test holds when any
    of its values matches: so one narrowing test of a caller key whose values all name someone will do."""
    if not isinstance(condition, dict):
        return False
    for operator, tests in condition.items():
        if operator.lower().removeprefix("foranyvalue:") not in NARROWING_OPERATORS or not isinstance(tests, dict):
            continue
        for key, values in tests.items():
            if key.lower() in CALLER_KEYS and _list(values) and all(
                    _names_someone(key.lower(), str(v)) for v in _list(values)):
                return True
    return False


def _anyone(statement: dict) -> bool:
    """Does the statement grant to every caller? `*` in any form, everyone but NotPrincipal, or a
    service, which calls on behalf of any of its customers unless a condition says whose."""
    principal = statement.get("Principal")
    return ("NotPrincipal" in statement or "*" in _strings(principal)
            or (isinstance(principal, dict) and "Service" in principal))


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
    for resource in resources:
        if resource.type not in (BUCKET_POLICY, BUCKET):
            continue
        for where, statement in _documents(resource):
            if (statement.get("Effect") == "Allow" and _anyone(statement)
                    and not _restricts_caller(statement.get("Condition"))):
                violations.append(f"bucket policy {where} allows anyone: {statement.get('Sid', statement)} "
                                  "(no condition restricts who the caller is)")
    return violations


def no_broad_s3_grants(resources: list[Resource]) -> list[str]:
    violations = []
    for resource in resources:
        for where, statement in _documents(resource):
            if statement.get("Effect") != "Allow":
                continue
            actions = statement.get("Action", {"NotAction": statement.get("NotAction")})
            if _covers(statement, "Action", f"s3:{FILL}"):
                violations.append(f"{where} grants every S3 action with {actions} (name the actions it needs)")
            s3_actions = _witnesses([str(a).lower() for a in _list(statement.get("Action"))], "s3:")
            arns = [str(r) for r in _list(statement.get("Resource"))]
            strangers = [arn for b in STRANGERS_BUCKETS for arn in (b, *_witnesses(arns, f"{b}/"))]
            if any(_applies(statement, action, arn) for action in s3_actions for arn in strangers):
                reach = statement.get("Resource", {"NotResource": statement.get("NotResource")})
                violations.append(f"{where} grants {actions} on {reach}, which reaches every bucket (name the buckets)")
    return violations


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
            statements = [s for role in _of(resources, ROLE) if function.refers_to("role", role)
                          for s in _role_statements(resources, role)]
            for bucket in triggering:
                violations += _writes_into(function, bucket, statements)
    return violations


def _writes_into(function: Resource, bucket: Resource, statements: list[tuple[str, dict]]) -> list[str]:
    """The writes that `statements` allow anywhere in `bucket` (none to judge while its name is unknown)."""
    name = bucket.props.get("bucket")
    if not name:
        return []
    arn = bucket.props.get("arn") or f"arn:aws:s3:::{name}"
    objects = _witnesses([str(r) for _, s in statements for r in _list(s.get("Resource"))], f"{arn}/")
    violations = []
    for action in WRITE_ACTIONS:
        where = next(filter(None, (_allowed_by(statements, action, key) for key in objects)), None)
        if where:
            violations.append(f"function {function.name} may {action} into {bucket.name}, "
                              f"the bucket that triggers it (allowed by {where})")
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


def batch_job_roles_are_scoped(resources: list[Resource]) -> list[str]:
    """A role S3 Batch Operations may take runs jobs over whole buckets: it may invoke only functions
    it names (a version or alias of one, `name:*`, is still that function) and never write into a
    bucket that triggers functions."""
    violations = []
    triggering = [b for b in _of(resources, BUCKET) if any(n.refers_to("bucket", b) for n in _of(resources, NOTIFICATION))]
    for role in _of(resources, ROLE):
        trust = _statements(role.props.get("assumeRolePolicy")) or []
        if not any("batchoperations.s3.amazonaws.com" in _strings(s.get("Principal")) for s in trust):
            continue
        statements = _role_statements(resources, role)
        for where, statement in statements:
            if statement.get("Effect") != "Allow" or not _covers(statement, "Action", "lambda:InvokeFunction"):
                continue
            unnamed = ["NotResource"] if "NotResource" in statement else [
                r for r in map(str, _list(statement.get("Resource"))) if not NAMED_FUNCTION.fullmatch(r)]
            if unnamed:
                violations.append(f"batch job role {role.name} may invoke functions it does not name: "
                                  f"{unnamed[0]} (in {where})")
        for bucket in triggering:
            violations += [v.replace(f"function {role.name}", f"batch job role {role.name}", 1)
                           for v in _writes_into(role, bucket, statements)]
    return violations


# A function ARN without a wildcard in its name; a version or alias (`:*`) of it is that function.
NAMED_FUNCTION = re.compile(r"arn:[\w-]+:lambda:[\w-]+:\d+:function:[\w-]+(:(\*|[\w-]+))?")


RULES = (
    Rule("no-public-buckets", "No bucket may be public: ACL, public access block or bucket policy.",
         no_public_buckets),
    Rule("no-broad-s3-grants", "No policy may grant every S3 action, or S3 actions on every bucket.",
         no_broad_s3_grants),
    Rule("functions-cannot-write-their-trigger", "A function notified by a bucket may not write into it.",
         functions_cannot_write_their_trigger),
    Rule("backup-has-object-lock", "The backup bucket needs object lock with a default retention.",
         backup_has_object_lock),
    Rule("batch-job-roles-are-scoped", "A role S3 Batch Operations takes invokes named functions only and never "
         "writes into a bucket that triggers functions.", batch_job_roles_are_scoped),
)
