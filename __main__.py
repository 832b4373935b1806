"""The Pulumi program: stack config in, one ImagePipeline, outputs out."""

import pulumi

from infra.config import read_settings
from infra.image_pipeline import ImagePipeline, ImagePipelineArgs
from pipeline.keys import ORIGINAL_PREFIX

settings = read_settings()
stack = ImagePipeline("image-pipeline", ImagePipelineArgs(settings))

outputs = {
    "cdnDomain": stack.cdn.domain_name,
    "uploadsBucket": stack.storage.names["uploads"],
    "processedBucket": stack.storage.names["processed"],
    "backupBucket": stack.storage.names["backup"],
    "topicArn": stack.events.topic.arn,
    "deadLetterQueueUrl": stack.functions.dead_letters.url,
    "resizeFunction": stack.functions.functions["resize"].name,
    "backupFunction": stack.functions.functions["backup"].name,
    "urlPatterns": stack.url_patterns,
    # What an app backend needs to sign presigned POSTs for browsers (README, Privacy).
    "uploaderPolicyArn": stack.uploader.policy.arn,
    "uploadPrefix": ORIGINAL_PREFIX,
    "uploadMaxBytes": settings.pipeline.max_bytes,
    # what `image-pipeline backfill --stack NAME` reads
    "distributionId": stack.cdn.distribution.id,
    "pipelineConfig": settings.pipeline.to_json(),
    "architecture": settings.architecture,
    "backfillFunction": stack.backfill.function.name,
    "backfillFunctionArn": stack.backfill.function.arn,
    "backfillRoleArn": stack.backfill.job_role.arn,
    "backfillBucket": stack.backfill.bucket.bucket,
    "backfillMemoryMb": settings.resize_memory_mb,
    "backfillConcurrency": settings.backfill_concurrency,
}
if stack.uploader.role:
    outputs["uploaderRoleArn"] = stack.uploader.role.arn
outputs["originals"] = settings.originals  # public, signed or private (README, Privacy)
if stack.cdn.originals_key:
    outputs["originalsKeyId"] = stack.cdn.originals_key.id  # the Key-Pair-Id of a signed URL
for name, value in outputs.items():
    pulumi.export(name, value)
