"""The backfill's share of the stack: the function S3 Batch Operations invokes, the role a job
runs as, and a small bucket for job manifests and completion reports that expire.

The function is the resize function's artifact with another handler
(`pipeline.handlers.backfill_handler`) and its own reserved concurrency (`backfillConcurrency`),
so that a backfill of millions of images never takes the concurrency live uploads need.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import pulumi
import pulumi_aws as aws

from infra import policies
from infra.storage import JOBS, lifecycle
from pipeline.config import FUNCTION_ENVIRONMENT

HANDLER = "pipeline.handlers.backfill_handler"


@dataclass
class BackfillArgs:
    settings: "object"  # infra.config.StackSettings
    buckets: dict[str, aws.s3.Bucket]
    functions: "object"  # infra.functions.Functions: its artifact, layer and runtime
    account_id: pulumi.Input[str]


class Backfill(pulumi.ComponentResource):
    def __init__(self, name: str, args: BackfillArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("imagepipeline:index:Backfill", name, None, opts)
        settings, buckets, functions = args.settings, args.buckets, args.functions
        child = pulumi.ResourceOptions(parent=self)

        # What `pulumi destroy` does to the jobs bucket is storage.lifecycle's: it holds no data, so
        # it is never protected and is emptied and deleted with the stack, settings and all.
        kept = lifecycle(JOBS, settings.protect_data)
        attached = pulumi.ResourceOptions(parent=self, retain_on_delete=kept.retain_settings)
        self.bucket = aws.s3.Bucket(
            f"{name}-jobs", tags={"pipeline:role": JOBS}, force_destroy=kept.force_destroy or None,
            opts=pulumi.ResourceOptions(parent=self, protect=kept.protect, retain_on_delete=kept.retain))
        block = aws.s3.BucketPublicAccessBlock(
            f"{name}-jobs-public-access-block", bucket=self.bucket.id, block_public_acls=True,
            block_public_policy=True, ignore_public_acls=True, restrict_public_buckets=True, opts=attached)
        aws.s3.BucketOwnershipControls(f"{name}-jobs-ownership", bucket=self.bucket.id,
                                       rule={"object_ownership": "BucketOwnerEnforced"}, opts=attached)
        aws.s3.BucketServerSideEncryptionConfiguration(
            f"{name}-jobs-encryption", bucket=self.bucket.id,
            rules=[{"apply_server_side_encryption_by_default": {"sse_algorithm": "AES256"},
                    "bucket_key_enabled": True}], opts=attached)
        aws.s3.BucketPolicy(
            f"{name}-jobs-policy", bucket=self.bucket.id,
            policy=self.bucket.bucket.apply(lambda b: json.dumps(policies.document(policies.deny_insecure_transport(b)))),
            opts=pulumi.ResourceOptions.merge(attached, pulumi.ResourceOptions(depends_on=[block])))
        # Job manifests and reports are worth keeping until the job is understood, not forever.
        aws.s3.BucketLifecycleConfiguration(
            f"{name}-jobs-lifecycle", bucket=self.bucket.id, opts=attached,
            rules=[{"id": "expire-job-manifests-and-reports", "status": "Enabled", "filter": {"prefix": "backfill/"},
                    "expiration": {"days": settings.backfill_report_days},
                    "abort_incomplete_multipart_upload": {"days_after_initiation": 1}}])

        function_name = f"{pulumi.get_project()}-{pulumi.get_stack()}-backfill"
        log_group = aws.cloudwatch.LogGroup(f"{name}-logs", name=f"/aws/lambda/{function_name}",
                                            retention_in_days=settings.log_retention_days, opts=child)
        self.function_role = aws.iam.Role(f"{name}-function-role",
                                          assume_role_policy=json.dumps(policies.assume_role_by_lambda()), opts=child)
        s3_access = aws.iam.RolePolicy(
            f"{name}-function-s3", role=self.function_role.id, opts=child,
            policy=pulumi.Output.all(buckets["uploads"].bucket, buckets["processed"].bucket).apply(
                lambda b: json.dumps(policies.backfill_s3_policy(b[0], b[1]))))
        logs = aws.iam.RolePolicy(f"{name}-function-logs", role=self.function_role.id, opts=child,
                                  policy=log_group.arn.apply(lambda arn: json.dumps(policies.logs_policy(arn))))
        artifact = functions.artifact
        self.function = aws.lambda_.Function(
            f"{name}-function", name=function_name, role=self.function_role.arn, runtime=functions.runtime,
            handler=HANDLER, architectures=[settings.architecture], code=pulumi.FileArchive(str(artifact.code_zip)),
            layers=[functions.layer.arn], memory_size=settings.resize_memory_mb, timeout=settings.resize_timeout_s,
            reserved_concurrent_executions=settings.backfill_concurrency,
            environment={"variables": {"UPLOADS_BUCKET": buckets["uploads"].bucket,
                                       "PROCESSED_BUCKET": buckets["processed"].bucket,
                                       "PIPELINE_CONFIG": settings.pipeline.to_json(),
                                       "POWERTOOLS_SERVICE_NAME": "image-pipeline-backfill",
                                       **FUNCTION_ENVIRONMENT}},
            logging_config={"log_format": "Text", "log_group": log_group.name},
            opts=pulumi.ResourceOptions(parent=self, depends_on=[log_group, s3_access, logs]))

        self.job_role = aws.iam.Role(
            f"{name}-job-role", opts=child,
            assume_role_policy=pulumi.Output.from_input(args.account_id).apply(
                lambda account: json.dumps(policies.assume_role_by_batch_operations(account))))
        aws.iam.RolePolicy(
            f"{name}-job", role=self.job_role.id, opts=child,
            policy=pulumi.Output.all(self.function.arn, self.bucket.bucket, buckets["uploads"].bucket).apply(
                lambda v: json.dumps(policies.batch_job_policy(v[0], v[1], v[2]))))
        self.register_outputs({"function": self.function.name, "job_role": self.job_role.arn,
                               "bucket": self.bucket.bucket})
