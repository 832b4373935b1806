"""IAM and resource policy documents, as plain data built from plain strings.

Pure functions, so that the same documents are asserted by the tests and so that each is known
at preview time (bucket ARNs come from bucket names, which autonaming fixes before creation).
"""

from __future__ import annotations

from typing import Any

ORIGINALS = "uploads/images/original/*"
IMAGES = "uploads/images/*"
# Changing or removing what object lock protects: denied to everyone on the backup bucket.
BACKUP_PROTECTED_ACTIONS = [
    "s3:DeleteObject", "s3:DeleteObjectVersion", "s3:PutObjectRetention", "s3:PutObjectLegalHold",
    "s3:BypassGovernanceRetention", "s3:PutBucketObjectLockConfiguration", "s3:PutBucketVersioning",
    "s3:PutLifecycleConfiguration", "s3:DeleteBucket",
]


def bucket_arn(name: str) -> str:
    return f"arn:aws:s3:::{name}"


def document(*statements: dict[str, Any]) -> dict[str, Any]:
    return {"Version": "2012-10-17", "Statement": list(statements)}


def deny_insecure_transport(bucket: str) -> dict[str, Any]:
    return {"Sid": "DenyInsecureTransport", "Effect": "Deny", "Principal": "*", "Action": "s3:*",
            "Resource": [bucket_arn(bucket), f"{bucket_arn(bucket)}/*"],
            "Condition": {"Bool": {"aws:SecureTransport": "false"}}}


def allow_cloudfront_reads(bucket: str, prefix: str, distribution_arn: str) -> dict[str, Any]:
    return {"Sid": "AllowCloudFrontReads", "Effect": "Allow", "Principal": {"Service": "cloudfront.amazonaws.com"},
            "Action": "s3:GetObject", "Resource": f"{bucket_arn(bucket)}/{prefix}",
            "Condition": {"StringEquals": {"AWS:SourceArn": distribution_arn}}}


def served_bucket_policy(bucket: str, prefix: str, distribution_arn: str) -> dict[str, Any]:
    """Uploads and processed: TLS only, and readable by this distribution only."""
    return document(deny_insecure_transport(bucket), allow_cloudfront_reads(bucket, prefix, distribution_arn))


def backup_bucket_policy(bucket: str) -> dict[str, Any]:
    """Backup: TLS only, and nobody (of this account or any other) may delete or unlock anything."""
    return document(
        deny_insecure_transport(bucket),
        {"Sid": "DenyDeletionAndUnlocking", "Effect": "Deny", "Principal": "*", "Action": BACKUP_PROTECTED_ACTIONS,
         "Resource": [bucket_arn(bucket), f"{bucket_arn(bucket)}/*"]},
    )


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
    return document(
        {"Sid": "ReadOriginals", "Effect": "Allow", "Action": "s3:GetObject",
         "Resource": f"{bucket_arn(uploads)}/{ORIGINALS}"},
        {"Sid": "WriteVariations", "Effect": "Allow",
         "Action": ["s3:GetObject", "s3:PutObject", "s3:PutObjectTagging", "s3:DeleteObject"],
         "Resource": f"{bucket_arn(processed)}/{IMAGES}"},
        {"Sid": "TellMissingFromForbidden", "Effect": "Allow", "Action": "s3:ListBucket",
         "Resource": [bucket_arn(uploads), bucket_arn(processed)]},
        _deny_writes_to(uploads),
    )


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
