"""One SNS topic for upload events: only the uploads bucket may publish, only for originals."""

from __future__ import annotations

import json
from dataclasses import dataclass

import pulumi
import pulumi_aws as aws

from infra import policies
from pipeline.events import NOTIFICATION_EVENTS
from pipeline.keys import ORIGINAL_PREFIX

# The same events and prefix filter as the local stack's (pipeline/local/topology.py).
EVENTS = list(NOTIFICATION_EVENTS)
ORIGINALS_PREFIX = ORIGINAL_PREFIX


@dataclass
class EventsArgs:
    uploads_bucket: aws.s3.Bucket
    account_id: pulumi.Input[str]


class Events(pulumi.ComponentResource):
    def __init__(self, name: str, args: EventsArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("imagepipeline:index:Events", name, None, opts)
        self.topic = aws.sns.Topic(f"{name}-topic", opts=pulumi.ResourceOptions(parent=self))
        topic_policy = aws.sns.TopicPolicy(
            f"{name}-topic-policy", arn=self.topic.arn,
            policy=pulumi.Output.all(self.topic.arn, args.uploads_bucket.bucket, args.account_id).apply(
                lambda v: json.dumps(policies.topic_policy(v[0], v[1], v[2]))),
            opts=pulumi.ResourceOptions(parent=self))
        aws.s3.BucketNotification(
            f"{name}-uploads-notification", bucket=args.uploads_bucket.id,
            topics=[{"topic_arn": self.topic.arn, "events": EVENTS, "filter_prefix": ORIGINALS_PREFIX}],
            opts=pulumi.ResourceOptions(parent=self, depends_on=[topic_policy]))
        self.register_outputs({"topic_arn": self.topic.arn})
