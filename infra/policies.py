"""IAM and resource policy documents, as plain data built from plain strings, and a small evaluator of them.

Pure functions, so that the same documents are asserted by the tests and so that each is known
at preview time (bucket ARNs come from bucket names, which autonaming fixes before creation).
"""

from __future__ import annotations

import re
from typing import Any

ORIGINALS = "uploads/images/original/*"
IMAGES = "uploads/images/*"
# The backup bucket's policy (backup_bucket_policy) sorts what could weaken a backup in three:
# - removing or unlocking what object lock protects, or the bucket itself: denied to every
#   principal, the deployer included (the stack never deletes or unlocks a backup, and retains the
#   bucket on `pulumi destroy`);
BACKUP_OBJECT_PROTECTION = [
    "s3:DeleteObject", "s3:DeleteObjectVersion", "s3:PutObjectRetention", "s3:PutObjectLegalHold",
    "s3:BypassGovernanceRetention", "s3:DeleteBucket",
]
# - the bucket's settings, which the stack manages (each S3 call that writes one needs one of these:
#   "Required permissions for Amazon S3 API operations"): denied to all but the deployer;
BACKUP_BUCKET_SETTINGS = [
    "s3:PutBucketObjectLockConfiguration", "s3:PutBucketVersioning", "s3:PutLifecycleConfiguration",
    "s3:PutEncryptionConfiguration", "s3:PutBucketPublicAccessBlock", "s3:PutBucketOwnershipControls",
    "s3:PutBucketAcl", "s3:PutReplicationConfiguration",
]
# - the policy itself: denied to all but the deployer. (The account's root user may always read,
#   put and delete a bucket policy, whatever it says: ROOT_MAY_ALWAYS.)
BUCKET_POLICY_CHANGES = ["s3:PutBucketPolicy", "s3:DeleteBucketPolicy"]
ROOT_MAY_ALWAYS = ("s3:GetBucketPolicy", "s3:PutBucketPolicy", "s3:DeleteBucketPolicy")
# The backup function's role may do none of it.
BACKUP_PROTECTED_ACTIONS = BACKUP_OBJECT_PROTECTION + BACKUP_BUCKET_SETTINGS + BUCKET_POLICY_CHANGES


def bucket_arn(name: str) -> str:
    return f"arn:aws:s3:::{name}"


def document(*statements: dict[str, Any]) -> dict[str, Any]:
    return {"Version": "2012-10-17", "Statement": list(statements)}


def deny_insecure_transport(bucket: str) -> dict[str, Any]:
    return {"Sid": "DenyInsecureTransport", "Effect": "Deny", "Principal": "*", "Action": "s3:*",
            "Resource": [bucket_arn(bucket), f"{bucket_arn(bucket)}/*"],
            "Condition": {"Bool": {"aws:SecureTransport": "false"}}}


def cloudfront_grants(bucket: str, prefix: str, distribution_arn: str) -> list[dict[str, Any]]:
    """What this distribution's origin access control may do in a bucket it serves, and nobody else
    (the CloudFront service principal, only when the request is made for this distribution):

    - read the objects under `prefix`;
    - list the bucket, for one reason: without s3:ListBucket S3 answers 403 AccessDenied for a key
      that does not exist, with it 404 NoSuchKey (AWS's documented way to get 404s through OAC).
      A listing itself is never asked for through the distribution: S3 lists for `GET /` only,
      which the distribution answers 404 at the edge (infra/cdn.py, NOT_SERVED_CODE), and no
      query string but `v` reaches S3."""
    def grant(sid: str, action: str, resource: str) -> dict[str, Any]:
        return {"Sid": sid, "Effect": "Allow", "Principal": {"Service": "cloudfront.amazonaws.com"},
                "Action": action, "Resource": resource,
                "Condition": {"StringEquals": {"AWS:SourceArn": distribution_arn}}}

    return [grant("AllowCloudFrontReads", "s3:GetObject", f"{bucket_arn(bucket)}/{prefix}"),
            grant("AllowCloudFrontToTellMissingKeys", "s3:ListBucket", bucket_arn(bucket))]


def served_bucket_policy(bucket: str, prefix: str, distribution_arn: str) -> dict[str, Any]:
    """Uploads (when the CDN serves originals) and processed: TLS only, and readable by this
    distribution only, which is told 404 for a missing key."""
    return document(deny_insecure_transport(bucket), *cloudfront_grants(bucket, prefix, distribution_arn))


def backup_bucket_policy(bucket: str, deployer_arn: str | None) -> dict[str, Any]:
    """Backup: TLS only; nobody (of this account or any other) may delete or unlock a backup or delete
    the bucket; and nobody but `deployer_arn` may change the bucket's settings or this policy.

    Without a deployer (allowed while the stack does not protect its data) the last two statements
    are left out rather than written to deny everyone: that would also deny the stack's own next
    `pulumi up`."""
    everything = [bucket_arn(bucket), f"{bucket_arn(bucket)}/*"]
    statements = [
        deny_insecure_transport(bucket),
        {"Sid": "DenyDeletionAndUnlocking", "Effect": "Deny", "Principal": "*", "Action": BACKUP_OBJECT_PROTECTION,
         "Resource": everything},
    ]
    if deployer_arn:
        but_the_deployer = {"ArnNotEquals": {"aws:PrincipalArn": deployer_arn}}
        statements += [
            {"Sid": "DenySettingChangesButByTheDeployer", "Effect": "Deny", "Principal": "*",
             "Action": BACKUP_BUCKET_SETTINGS, "Resource": bucket_arn(bucket), "Condition": but_the_deployer},
            {"Sid": "DenyPolicyChangesButByTheDeployer", "Effect": "Deny", "Principal": "*",
             "Action": BUCKET_POLICY_CHANGES, "Resource": bucket_arn(bucket), "Condition": but_the_deployer},
        ]
    return document(*statements)


def topic_policy(topic_arn: str, uploads_bucket: str, account_id: str) -> dict[str, Any]:
    """Only S3, only for the uploads bucket of this account, may publish upload events."""
    return document({
        "Sid": "AllowUploadsBucketEvents", "Effect": "Allow", "Principal": {"Service": "s3.amazonaws.com"},
        "Action": "SNS:Publish", "Resource": topic_arn,
        "Condition": {"ArnLike": {"aws:SourceArn": bucket_arn(uploads_bucket)},
                      "StringEquals": {"aws:SourceAccount": account_id}},
    })


def assume_role_by_lambda() -> dict[str, Any]:
    return document({"Effect": "Allow", "Principal": {"Service": "lambda.amazonaws.com"}, "Action": "sts:AssumeRole"})


def resize_s3_policy(uploads: str, processed: str, distribution_arn: str) -> dict[str, Any]:
    """Read originals; write, tag and delete variations and manifests; invalidate paths on this
    stack's distribution (and no other); nothing else."""
    return document(
        *_convergence_statements(uploads, processed),
        {"Sid": "InvalidateChangedPaths", "Effect": "Allow", "Action": "cloudfront:CreateInvalidation",
         "Resource": distribution_arn},
        _deny_writes_to(uploads),
    )


def backup_s3_policy(uploads: str, backup: str) -> dict[str, Any]:
    """Read exactly the version of an original an event names; put copies into backup and read
    the versions already there; never delete or unlock there."""
    return document(
        # CopyObject of `CopySource=...?versionId=` reads that version (s3:GetObjectVersion) and,
        # with the default tagging directive COPY, that version's tags (s3:GetObjectVersionTagging).
        {"Sid": "ReadOriginals", "Effect": "Allow",
         "Action": ["s3:GetObject", "s3:GetObjectVersion", "s3:GetObjectTagging", "s3:GetObjectVersionTagging"],
         "Resource": f"{bucket_arn(uploads)}/{ORIGINALS}"},
        {"Sid": "PutBackups", "Effect": "Allow", "Action": ["s3:GetObject", "s3:PutObject", "s3:PutObjectTagging"],
         "Resource": f"{bucket_arn(backup)}/{ORIGINALS}"},
        # Deduplication: list the backup's versions of a key and read each one's metadata.
        {"Sid": "ReadBackupVersions", "Effect": "Allow", "Action": "s3:GetObjectVersion",
         "Resource": f"{bucket_arn(backup)}/{ORIGINALS}"},
        {"Sid": "ListBackupVersions", "Effect": "Allow", "Action": "s3:ListBucketVersions",
         "Resource": bucket_arn(backup)},
        {"Sid": "TellMissingFromForbidden", "Effect": "Allow", "Action": "s3:ListBucket",
         "Resource": [bucket_arn(uploads), bucket_arn(backup)]},
        _deny_writes_to(uploads),
        {"Sid": "NeverDeleteOrUnlockBackups", "Effect": "Deny", "Action": BACKUP_PROTECTED_ACTIONS,
         "Resource": [bucket_arn(backup), f"{bucket_arn(backup)}/*"]},
    )


def _deny_writes_to(uploads: str) -> dict[str, Any]:
    # Writing into the bucket that triggers the functions would make them call themselves. It is
    # versioned: deleting a version is an s3:ObjectRemoved event too.
    return {"Sid": "NeverWriteToTheTriggerBucket", "Effect": "Deny",
            "Action": ["s3:PutObject", "s3:DeleteObject", "s3:DeleteObjectVersion", "s3:PutObjectAcl",
                       "s3:RestoreObject"],
            "Resource": [bucket_arn(uploads), f"{bucket_arn(uploads)}/*"]}


def runtime_policy(log_group_arn: str, dead_letter_queue_arn: str) -> dict[str, Any]:
    """Write its own logs; hand failed events to the dead-letter queue."""
    return document(
        {"Sid": "OwnLogs", "Effect": "Allow", "Action": ["logs:CreateLogStream", "logs:PutLogEvents"],
         "Resource": f"{log_group_arn}:*"},
        {"Sid": "FailedEventsToDeadLetters", "Effect": "Allow", "Action": "sqs:SendMessage",
         "Resource": dead_letter_queue_arn},
    )


def uploader_policy(uploads: str) -> dict[str, Any]:
    """What an app backend attaches to sign presigned POSTs (or PUTs) of originals for browsers:
    S3 allows a presigned request only if its signer may make it. Put objects under the originals
    prefix of the uploads bucket, and nothing else: no reads, no deletes, no other prefix."""
    return document({"Sid": "SignUploadsOfOriginals", "Effect": "Allow", "Action": "s3:PutObject",
                     "Resource": f"{bucket_arn(uploads)}/{ORIGINALS}"})


def assume_role_by(principal_arn: str) -> dict[str, Any]:
    """Only this AWS principal (an account root, role or user ARN) may assume the role."""
    return document({"Effect": "Allow", "Principal": {"AWS": principal_arn}, "Action": "sts:AssumeRole"})


def tls_only_bucket_policy(bucket: str) -> dict[str, Any]:
    """Uploads when the CDN serves no originals: TLS only, and no reads granted to anyone (the
    functions read through their roles' own policies)."""
    return document(deny_insecure_transport(bucket))


# The backfill: a function S3 Batch Operations invokes, and the role a job runs as.
BACKFILL_MANIFESTS = "backfill/manifests/*"
BACKFILL_REPORTS = "backfill/reports/*"


def assume_role_by_batch_operations(account_id: str) -> dict[str, Any]:
    """Only S3 Batch Operations, for jobs of this account, may take the job role."""
    return document({"Effect": "Allow", "Principal": {"Service": "batchoperations.s3.amazonaws.com"},
                     "Action": "sts:AssumeRole", "Condition": {"StringEquals": {"aws:SourceAccount": account_id}}})


def backfill_s3_policy(uploads: str, processed: str) -> dict[str, Any]:
    """What the resize function may do to S3, and nothing of the CDN: the command invalidates
    one wildcard per variation at the end of a job."""
    return document(*_convergence_statements(uploads, processed), _deny_writes_to(uploads))


def _convergence_statements(uploads: str, processed: str) -> list[dict[str, Any]]:
    """What apply_change does to S3, for the resize and the backfill function alike."""
    return [
        {"Sid": "ReadOriginals", "Effect": "Allow", "Action": "s3:GetObject",
         "Resource": f"{bucket_arn(uploads)}/{ORIGINALS}"},
        # PutObject with a Tagging header (the tombstone) also needs s3:PutObjectTagging.
        # Conditional writes (If-Match, If-None-Match) need nothing beyond s3:PutObject; a delete
        # with If-Match: <ETag> needs s3:GetObject besides s3:DeleteObject, both granted here.
        {"Sid": "WriteVariations", "Effect": "Allow",
         "Action": ["s3:GetObject", "s3:PutObject", "s3:PutObjectTagging", "s3:DeleteObject"],
         "Resource": f"{bucket_arn(processed)}/{IMAGES}"},
        # Without ListBucket a missing key answers 403 instead of 404, which would look transient.
        {"Sid": "TellMissingFromForbidden", "Effect": "Allow", "Action": "s3:ListBucket",
         "Resource": [bucket_arn(uploads), bucket_arn(processed)]},
    ]


def batch_job_policy(function_arn: str, jobs_bucket: str, uploads: str) -> dict[str, Any]:
    """A backfill job: invoke the backfill function and no other, read its manifest, write its
    report; list the originals when S3 generates the manifest (and write that manifest)."""
    return document(
        {"Sid": "InvokeTheBackfillFunction", "Effect": "Allow", "Action": "lambda:InvokeFunction",
         "Resource": [function_arn, f"{function_arn}:*"]},
        {"Sid": "ReadJobManifests", "Effect": "Allow", "Action": ["s3:GetObject", "s3:GetObjectVersion"],
         "Resource": f"{bucket_arn(jobs_bucket)}/{BACKFILL_MANIFESTS}"},
        {"Sid": "WriteReportsAndGeneratedManifests", "Effect": "Allow", "Action": "s3:PutObject",
         "Resource": [f"{bucket_arn(jobs_bucket)}/{BACKFILL_REPORTS}", f"{bucket_arn(jobs_bucket)}/{BACKFILL_MANIFESTS}"]},
        {"Sid": "KnowTheJobsBucket", "Effect": "Allow", "Action": "s3:GetBucketLocation",
         "Resource": bucket_arn(jobs_bucket)},
        {"Sid": "ListOriginalsForTheManifestGenerator", "Effect": "Allow", "Action": "s3:ListBucket",
         "Resource": bucket_arn(uploads), "Condition": {"StringLike": {"s3:prefix": [ORIGINALS]}}},
        _deny_writes_to(uploads),
    )


def logs_policy(log_group_arn: str) -> dict[str, Any]:
    """Write its own logs (a function invoked synchronously, with no dead-letter queue)."""
    return document({"Sid": "OwnLogs", "Effect": "Allow", "Action": ["logs:CreateLogStream", "logs:PutLogEvents"],
                     "Resource": f"{log_group_arn}:*"})


# --- Evaluation -------------------------------------------------------------------------------
# Enough of IAM's policy logic to judge our own documents: Allow/Deny with an explicit Deny
# winning, Action/NotAction (case-insensitive, * and ? wildcards), Resource/NotResource,
# Principal ("*", {"AWS": ...}, {"Service": ...}) and the condition operators below. Anything
# else raises rather than being skipped.


def _wildcard(pattern: str, value: str, ignore_case: bool = False) -> bool:
    regex = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    return re.fullmatch(regex, value, re.IGNORECASE if ignore_case else 0) is not None


def _arn_like(pattern: str, value: str) -> bool:
    """ArnLike/ArnEquals: each of the six colon-separated parts matched on its own, case-sensitively."""
    patterns, values = pattern.split(":", 5), value.split(":", 5)
    return len(patterns) == len(values) == 6 and all(map(_wildcard, patterns, values))


_OPERATORS = {
    "StringEquals": (lambda p, v: p == v, False),
    "StringNotEquals": (lambda p, v: p == v, True),
    "StringLike": (_wildcard, False),
    "StringNotLike": (_wildcard, True),
    "ArnEquals": (_arn_like, False),
    "ArnLike": (_arn_like, False),
    "ArnNotEquals": (_arn_like, True),
    "ArnNotLike": (_arn_like, True),
    "Bool": (lambda p, v: str(p).lower() == str(v).lower(), False),
}


def _listed(value: Any) -> list:
    return value if isinstance(value, list) else [value]


def _condition_holds(condition: dict, context: dict[str, str]) -> bool:
    for operator, keys in condition.items():
        if operator not in _OPERATORS:
            raise ValueError(f"condition operator {operator} is not modelled")
        matches, negated = _OPERATORS[operator]
        for key, patterns in keys.items():
            value = context.get(key)
            if value is None:  # a missing key fails a condition, and satisfies a negated one
                holds = negated
            else:
                hit = any(matches(str(p), value) for p in _listed(patterns))
                holds = not hit if negated else hit
            if not holds:
                return False
    return True


def _principal_matches(principal: Any, principal_arn: str) -> bool:
    if principal == "*":
        return True
    if not isinstance(principal, dict):
        raise ValueError(f"principal {principal!r} is not modelled")
    aws = _listed(principal.get("AWS", []))
    if any(re.fullmatch(r"\d{12}|arn:[^:]+:iam::\d{12}:root", a) for a in aws):
        raise ValueError("an account as principal (any of its principals) is not modelled")
    services = _listed(principal.get("Service", []))
    return "*" in aws or principal_arn in aws or principal_arn in services


def evaluate(document: dict, action: str, resource: str, principal_arn: str,
             context: dict[str, str] | None = None) -> str | None:
    """What a resource policy says about one request: "Deny" (an explicit deny applies), "Allow" (an
    allow applies, no deny does) or None (it says nothing: within the account, the principal's own
    IAM policies decide). `context` holds condition keys; aws:PrincipalArn is `principal_arn`."""
    context = {"aws:PrincipalArn": principal_arn, **(context or {})}
    verdict = None
    for statement in _listed(document["Statement"]):
        if "NotPrincipal" in statement:
            raise ValueError("NotPrincipal is not modelled")
        if "Action" in statement:
            acts = any(_wildcard(a, action, ignore_case=True) for a in _listed(statement["Action"]))
        else:
            acts = not any(_wildcard(a, action, ignore_case=True) for a in _listed(statement["NotAction"]))
        if "Resource" in statement:
            on = any(_wildcard(r, resource) for r in _listed(statement["Resource"]))
        else:
            on = not any(_wildcard(r, resource) for r in _listed(statement["NotResource"]))
        if not (acts and on and _principal_matches(statement.get("Principal", "*"), principal_arn)
                and _condition_holds(statement.get("Condition", {}), context)):
            continue
        if statement["Effect"] == "Deny":
            return "Deny"
        verdict = "Allow"
    return verdict


def bucket_request_allowed(bucket_policy: dict | None, action: str, resource: str, principal_arn: str,
                           context: dict[str, str] | None = None) -> bool:
    """May a principal of the bucket's own account, whose IAM policies allow `action`, make this S3
    request while `bucket_policy` (None: no policy yet) is in force? Yes, unless the policy denies
    it, and the root user's policy calls always go through (ROOT_MAY_ALWAYS)."""
    if principal_arn.endswith(":root") and action in ROOT_MAY_ALWAYS:
        return True
    return bucket_policy is None or evaluate(bucket_policy, action, resource, principal_arn, context) != "Deny"


def is_principal(caller_arn: str, principal_arn: str) -> bool:
    """Is the caller (sts get-caller-identity) the IAM principal `principal_arn` (as aws:PrincipalArn
    names it)? A role's session arn:aws:sts::A:assumed-role/N/S is the role arn:aws:iam::A:role/<path>N;
    anything else is compared as it is."""
    session = re.fullmatch(r"arn:(aws[a-z-]*):sts::(\d{12}):assumed-role/([^/]+)/.+", caller_arn)
    if session:
        partition, account, role = session.groups()
        return re.fullmatch(rf"arn:{partition}:iam::{account}:role/(.+/)?{re.escape(role)}", principal_arn) is not None
    return caller_arn == principal_arn
