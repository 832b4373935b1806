"""Three buckets: uploads (originals), processed (variations, manifests), backup (protected copies).

Every bucket: all four public-access blocks, ownership enforced (no ACLs), default encryption,
a policy denying requests without TLS. Uploads: versioning, so that the version an event names
can still be backed up after a replacement or deletion; previous versions expire after some days.
Processed: tombstone manifests expire after some days. Backup: versioning, object lock with a
default retention, a lifecycle to a cheaper class, and a policy, put after all of them, that denies
deleting or unlocking a backup to every principal and changing the bucket's settings or policy to
every principal but the deployer.

What `pulumi destroy` does to each bucket and to what is attached to it is `lifecycle(role,
protect_data)`, the backfill's jobs bucket (infra/backfill.py) included; the README's Deploy
section says the same in words.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import pulumi
import pulumi_aws as aws

from infra import policies
from pipeline.caching import TOMBSTONE_TAG

ROLES = ("uploads", "processed", "backup")
JOBS = "backfill"  # the backfill's bucket of job manifests and reports (infra/backfill.py), not made here


@dataclass(frozen=True)
class Lifecycle:
    """The resource options that decide what `pulumi destroy` (or a replacement) does to a bucket."""
    protect: bool  # the bucket: Pulumi refuses to delete or replace it
    retain: bool  # the bucket: Pulumi forgets it and leaves it in AWS
    force_destroy: bool  # the bucket: the provider empties it (every version) before deleting it
    retain_settings: bool  # what is attached to it (policy, versioning, lifecycle, ...): left in AWS


def lifecycle(role: str, protect_data: bool) -> Lifecycle:
    """Originals (uploads) and backups are data; variations (processed) can be derived again from
    the originals, at a cost, so they share the originals' protection. While `protect_data` holds no
    bucket can be deleted, and a kept bucket keeps its settings; without it uploads and processed
    are emptied and deleted. The backup bucket always outlives the stack, settings and all: object
    lock forbids emptying it before its retention ends anyway. The backfill's jobs bucket holds no
    data, whatever `protect_data` says: job manifests are listed again from the originals for free,
    completion reports only describe a past job and expire after `backfillReportDays` anyway, so
    every `destroy` (prod's `--exclude-protected` too) empties and deletes it, settings and all."""
    if role == "backup":
        return Lifecycle(protect=protect_data, retain=True, force_destroy=False, retain_settings=True)
    if role == JOBS:
        return Lifecycle(protect=False, retain=False, force_destroy=True, retain_settings=False)
    return Lifecycle(protect=protect_data, retain=False, force_destroy=not protect_data,
                     retain_settings=protect_data)


@dataclass
class StorageArgs:
    cors_origins: list[str]
    backup_retention_mode: str
    backup_retention_days: int
    backup_transition_days: int
    uploads_noncurrent_version_days: int
    tombstone_days: int
    browser_uploads: bool = True
    protect_data: bool = True
    deployer_arn: str | None = None  # who may change the backup bucket's settings and policy
    caller_arn: pulumi.Input[str] | None = None  # who runs this deployment (sts get-caller-identity)


class Storage(pulumi.ComponentResource):
    def __init__(self, name: str, args: StorageArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("imagepipeline:index:Storage", name, None, opts)
        self.lifecycles = {role: lifecycle(role, args.protect_data) for role in ROLES}
        # Everything attached to a bucket is kept in AWS with it, or not.
        self.attached = {role: pulumi.ResourceOptions(parent=self, retain_on_delete=self.lifecycles[role].retain_settings)
                         for role in ROLES}
        attached = self.attached
        self.buckets: dict[str, aws.s3.Bucket] = {}
        self.public_access_blocks: dict[str, aws.s3.BucketPublicAccessBlock] = {}
        settings: dict[str, list[pulumi.Resource]] = {role: [] for role in ROLES}  # attached to each bucket
        for role in ROLES:
            kept = self.lifecycles[role]
            bucket = aws.s3.Bucket(
                f"{name}-{role}", object_lock_enabled=(role == "backup") or None,
                force_destroy=kept.force_destroy or None, tags={"pipeline:role": role},
                opts=pulumi.ResourceOptions(parent=self, protect=kept.protect, retain_on_delete=kept.retain))
            self.buckets[role] = bucket
            self.public_access_blocks[role] = aws.s3.BucketPublicAccessBlock(
                f"{name}-{role}-public-access-block", bucket=bucket.id, block_public_acls=True,
                block_public_policy=True, ignore_public_acls=True, restrict_public_buckets=True, opts=attached[role])
            settings[role] += [
                self.public_access_blocks[role],
                aws.s3.BucketOwnershipControls(
                    f"{name}-{role}-ownership", bucket=bucket.id,
                    rule={"object_ownership": "BucketOwnerEnforced"}, opts=attached[role]),
                aws.s3.BucketServerSideEncryptionConfiguration(
                    f"{name}-{role}-encryption", bucket=bucket.id,
                    rules=[{"apply_server_side_encryption_by_default": {"sse_algorithm": "AES256"},
                            "bucket_key_enabled": True}], opts=attached[role]),
            ]

        uploads, processed, backup = (self.buckets[r] for r in ROLES)
        # CORS only for origins a person named (none by default). A browser uploads with a
        # presigned POST and nothing else; S3 answers its preflight from the same rule.
        # Not retained with its bucket, unlike the other settings: no CORS is the safe state, so
        # turning it off (corsOrigins [] or browserUploads false) must remove it from the bucket,
        # not just from the stack, and a destroy that keeps the bucket may strip it.
        cors = pulumi.ResourceOptions(parent=self)
        if args.cors_origins and args.browser_uploads:
            aws.s3.BucketCorsConfiguration(
                f"{name}-uploads-cors", bucket=uploads.id, opts=cors,
                cors_rules=[{"allowed_methods": ["POST"], "allowed_origins": args.cors_origins,
                             "expose_headers": ["ETag"], "max_age_seconds": 3600}])
        if args.cors_origins:
            aws.s3.BucketCorsConfiguration(
                f"{name}-processed-cors", bucket=processed.id, opts=cors,
                cors_rules=[{"allowed_methods": ["GET", "HEAD"], "allowed_origins": args.cors_origins,
                             "allowed_headers": ["*"], "max_age_seconds": 3600}])
        uploads_versioning = aws.s3.BucketVersioning(
            f"{name}-uploads-versioning", bucket=uploads.id,
            versioning_configuration={"status": "Enabled"}, opts=attached["uploads"])
        # Lifecycle deletions send s3:LifecycleExpiration:* events, not s3:ObjectRemoved:*, so
        # expiring old versions never reaches the functions.
        aws.s3.BucketLifecycleConfiguration(
            f"{name}-uploads-lifecycle", bucket=uploads.id,
            opts=_and(attached["uploads"], depends_on=[uploads_versioning]),
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
            f"{name}-processed-lifecycle", bucket=processed.id, opts=attached["processed"],
            rules=[{"id": "expire-tombstones", "status": "Enabled",
                    "filter": {"tag": {"key": tag_key, "value": tag_value}},
                    "expiration": {"days": args.tombstone_days}}])

        versioning = aws.s3.BucketVersioning(
            f"{name}-backup-versioning", bucket=backup.id,
            versioning_configuration={"status": "Enabled"}, opts=attached["backup"])
        settings["backup"] += [
            versioning,
            aws.s3.BucketObjectLockConfiguration(
                f"{name}-backup-object-lock", bucket=backup.id,
                rule={"default_retention": {"mode": args.backup_retention_mode, "days": args.backup_retention_days}},
                opts=_and(attached["backup"], depends_on=[versioning])),
            aws.s3.BucketLifecycleConfiguration(
                f"{name}-backup-lifecycle", bucket=backup.id,
                opts=_and(attached["backup"], depends_on=[versioning]),
                rules=[{"id": "older-backups-to-cheaper-storage", "status": "Enabled", "filter": {},
                        "transitions": [{"days": args.backup_transition_days, "storage_class": "GLACIER_IR"}],
                        "noncurrent_version_transitions": [{"noncurrent_days": args.backup_transition_days,
                                                            "storage_class": "GLACIER_IR"}],
                        "abort_incomplete_multipart_upload": {"days_after_initiation": 7}}]),
        ]
        # The policy comes last: on a first `pulumi up` every setting is in place before anything is
        # denied, whoever runs it. Once it is in force, every later `up` must run as the deployer.
        deployer = args.deployer_arn
        aws.s3.BucketPolicy(
            f"{name}-backup-policy", bucket=backup.id,
            policy=backup.bucket.apply(lambda b: json.dumps(policies.backup_bucket_policy(b, deployer))),
            opts=_and(attached["backup"], depends_on=settings["backup"]))
        if deployer and args.caller_arn is not None:
            pulumi.Output.from_input(args.caller_arn).apply(lambda caller: _warn_unless_deployer(caller, deployer))

        self.component_name = name
        self.names = {role: bucket.bucket for role, bucket in self.buckets.items()}
        self.register_outputs({f"{role}_bucket": bucket.bucket for role, bucket in self.buckets.items()})

    def allow_cdn_reads(self, distribution_arn: pulumi.Input[str], originals: bool = True) -> None:
        """TLS-only policies for the served buckets, readable by this distribution alone, which may
        also list them so that a missing key answers 404 (policies.cloudfront_grants); with
        `originals` False (the CDN serves none) the uploads bucket's policy grants nothing at all
        (the functions read it through their own roles)."""
        for role, prefix in (("uploads", policies.ORIGINALS), ("processed", policies.IMAGES)):
            bucket = self.buckets[role]

            def document(values, prefix=prefix, served=originals or role != "uploads") -> str:
                return json.dumps(policies.served_bucket_policy(values[0], prefix, values[1]) if served
                                  else policies.tls_only_bucket_policy(values[0]))

            aws.s3.BucketPolicy(
                f"{self.component_name}-{role}-policy", bucket=bucket.id,
                policy=pulumi.Output.all(bucket.bucket, distribution_arn).apply(document),
                opts=_and(self.attached[role], depends_on=[self.public_access_blocks[role]]))


def _and(options: pulumi.ResourceOptions, **more) -> pulumi.ResourceOptions:
    return pulumi.ResourceOptions.merge(options, pulumi.ResourceOptions(**more))


def _warn_unless_deployer(caller_arn: str, deployer_arn: str) -> None:
    if not policies.is_principal(caller_arn, deployer_arn):
        pulumi.log.warn(
            f"this deployment runs as {caller_arn}, but 'deployerArn' is {deployer_arn}: once the backup bucket's "
            f"policy is in force only the deployer may change the backup bucket's settings or policy, so this "
            f"deployment would be denied there. Run it as the deployer, or hand over first (README, Deploy)")
