"""Three buckets: uploads (originals), processed (variations, manifests), backup (protected copies).

Every bucket: all four public-access blocks, ownership enforced (no ACLs), default encryption,
a policy denying requests without TLS. Uploads: versioning, so that the version an event names
can still be backed up after a replacement or deletion; previous versions expire after some days.
Processed: tombstone manifests expire after some days. Backup: versioning, object lock with a
default retention, a policy denying deletion and unlocking to every principal, a lifecycle to a
cheaper class.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import pulumi
import pulumi_aws as aws

from infra import policies
from pipeline.caching import TOMBSTONE_TAG

ROLES = ("uploads", "processed", "backup")


@dataclass
class StorageArgs:
    cors_origins: list[str]
    backup_retention_mode: str
    backup_retention_days: int
    backup_transition_days: int
    uploads_noncurrent_version_days: int
    tombstone_days: int
    browser_uploads: bool = True


class Storage(pulumi.ComponentResource):
    def __init__(self, name: str, args: StorageArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("imagepipeline:index:Storage", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        self.buckets: dict[str, aws.s3.Bucket] = {}
        self.public_access_blocks: dict[str, aws.s3.BucketPublicAccessBlock] = {}
        for role in ROLES:
            bucket = aws.s3.Bucket(
                f"{name}-{role}", object_lock_enabled=(role == "backup") or None,
                tags={"pipeline:role": role},
                # The backup outlives the stack: `pulumi destroy` leaves it and what it protects.
                opts=pulumi.ResourceOptions(parent=self, retain_on_delete=(role == "backup")))
            self.buckets[role] = bucket
            self.public_access_blocks[role] = aws.s3.BucketPublicAccessBlock(
                f"{name}-{role}-public-access-block", bucket=bucket.id, block_public_acls=True,
                block_public_policy=True, ignore_public_acls=True, restrict_public_buckets=True, opts=child)
            aws.s3.BucketOwnershipControls(
                f"{name}-{role}-ownership", bucket=bucket.id,
                rule={"object_ownership": "BucketOwnerEnforced"}, opts=child)
            aws.s3.BucketServerSideEncryptionConfiguration(
                f"{name}-{role}-encryption", bucket=bucket.id,
                rules=[{"apply_server_side_encryption_by_default": {"sse_algorithm": "AES256"},
                        "bucket_key_enabled": True}], opts=child)

        uploads, processed, backup = (self.buckets[r] for r in ROLES)
        # CORS only for origins a person named (none by default). A browser uploads with a
        # presigned POST and nothing else; S3 answers its preflight from the same rule.
        if args.cors_origins and args.browser_uploads:
            aws.s3.BucketCorsConfiguration(
                f"{name}-uploads-cors", bucket=uploads.id, opts=child,
                cors_rules=[{"allowed_methods": ["POST"], "allowed_origins": args.cors_origins,
                             "expose_headers": ["ETag"], "max_age_seconds": 3600}])
        if args.cors_origins:
            aws.s3.BucketCorsConfiguration(
                f"{name}-processed-cors", bucket=processed.id, opts=child,
                cors_rules=[{"allowed_methods": ["GET", "HEAD"], "allowed_origins": args.cors_origins,
                             "allowed_headers": ["*"], "max_age_seconds": 3600}])
        uploads_versioning = aws.s3.BucketVersioning(
            f"{name}-uploads-versioning", bucket=uploads.id,
            versioning_configuration={"status": "Enabled"}, opts=child)
        # Lifecycle deletions send s3:LifecycleExpiration:* events, not s3:ObjectRemoved:*, so
        # expiring old versions never reaches the functions.
        aws.s3.BucketLifecycleConfiguration(
            f"{name}-uploads-lifecycle", bucket=uploads.id,
            opts=pulumi.ResourceOptions(parent=self, depends_on=[uploads_versioning]),
            rules=[{"id": "abort-incomplete-uploads", "status": "Enabled", "filter": {},
                    "abort_incomplete_multipart_upload": {"days_after_initiation": 7}},
                   {"id": "expire-previous-originals", "status": "Enabled", "filter": {},
                    "noncurrent_version_expiration": {"noncurrent_days": args.uploads_noncurrent_version_days},
                    # a deleted original's marker, once no version is left behind it
                    "expiration": {"expired_object_delete_marker": True}}])
        # A removed original leaves a "deleted" manifest so that a late event cannot bring its
        # variations back; once no invocation can still race it, it may go.
        tag_key, tag_value = TOMBSTONE_TAG
        aws.s3.BucketLifecycleConfiguration(
            f"{name}-processed-lifecycle", bucket=processed.id, opts=child,
            rules=[{"id": "expire-tombstones", "status": "Enabled",
                    "filter": {"tag": {"key": tag_key, "value": tag_value}},
                    "expiration": {"days": args.tombstone_days}}])

        versioning = aws.s3.BucketVersioning(
            f"{name}-backup-versioning", bucket=backup.id,
            versioning_configuration={"status": "Enabled"}, opts=child)
        aws.s3.BucketObjectLockConfiguration(
            f"{name}-backup-object-lock", bucket=backup.id,
            rule={"default_retention": {"mode": args.backup_retention_mode, "days": args.backup_retention_days}},
            opts=pulumi.ResourceOptions(parent=self, depends_on=[versioning]))
        aws.s3.BucketLifecycleConfiguration(
            f"{name}-backup-lifecycle", bucket=backup.id,
            opts=pulumi.ResourceOptions(parent=self, depends_on=[versioning]),
            rules=[{"id": "older-backups-to-cheaper-storage", "status": "Enabled", "filter": {},
                    "transitions": [{"days": args.backup_transition_days, "storage_class": "GLACIER_IR"}],
                    "noncurrent_version_transitions": [{"noncurrent_days": args.backup_transition_days,
                                                        "storage_class": "GLACIER_IR"}],
                    "abort_incomplete_multipart_upload": {"days_after_initiation": 7}}])
        aws.s3.BucketPolicy(
            f"{name}-backup-policy", bucket=backup.id,
            policy=backup.bucket.apply(lambda b: json.dumps(policies.backup_bucket_policy(b))),
            opts=pulumi.ResourceOptions(parent=self, depends_on=[self.public_access_blocks["backup"]]))

        self.component_name = name
        self.names = {role: bucket.bucket for role, bucket in self.buckets.items()}
        self.register_outputs({f"{role}_bucket": bucket.bucket for role, bucket in self.buckets.items()})

    def allow_cdn_reads(self, distribution_arn: pulumi.Input[str], originals: bool = True) -> None:
        """TLS-only policies for the served buckets, readable by this distribution alone; with
        `originals` False (the CDN serves none) the uploads bucket's policy grants no reads at all
        (the functions read it through their own roles)."""
        for role, prefix in (("uploads", policies.ORIGINALS), ("processed", policies.IMAGES)):
            bucket = self.buckets[role]

            def document(values, prefix=prefix, served=originals or role != "uploads") -> str:
                return json.dumps(policies.served_bucket_policy(values[0], prefix, values[1]) if served
                                  else policies.tls_only_bucket_policy(values[0]))

            aws.s3.BucketPolicy(
                f"{self.component_name}-{role}-policy", bucket=bucket.id,
                policy=pulumi.Output.all(bucket.bucket, distribution_arn).apply(document),
                opts=pulumi.ResourceOptions(parent=self, depends_on=[self.public_access_blocks[role]]))
