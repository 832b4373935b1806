"""The Pulumi program: stack config in, one ImagePipeline, outputs out."""

import pulumi

from infra.config import read_settings
from infra.image_pipeline import ImagePipeline, ImagePipelineArgs

settings = read_settings()
stack = ImagePipeline("image-pipeline", ImagePipelineArgs(settings))

pulumi.export("cdnDomain", stack.cdn.domain_name)
pulumi.export("uploadsBucket", stack.storage.names["uploads"])
pulumi.export("processedBucket", stack.storage.names["processed"])
pulumi.export("backupBucket", stack.storage.names["backup"])
pulumi.export("topicArn", stack.events.topic.arn)
pulumi.export("deadLetterQueueUrl", stack.functions.dead_letters.url)
pulumi.export("resizeFunction", stack.functions.functions["resize"].name)
pulumi.export("backupFunction", stack.functions.functions["backup"].name)
pulumi.export("urlPatterns", stack.url_patterns)
