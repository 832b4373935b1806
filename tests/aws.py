"""An in-process AWS (moto) wired like the real stack: uploads bucket -> SNS -> subscribers.

An SQS queue subscribed to the topic captures the real SNS envelope, which is then handed to the
handlers exactly as Lambda would (a Records list of aws:sns records).
"""

from __future__ import annotations

import json

import boto3

from pipeline.local.s3_notifications import patch_moto

REGION = "eu-west-1"
UPLOADS, PROCESSED, BACKUP = "photos-uploads", "photos-processed", "photos-backup"


class Stack:
    def __init__(self):
        patch_moto()  # versionId, sequencer and delete-marker events, as AWS sends them
        self.s3 = boto3.client("s3", region_name=REGION)
        self.sqs = boto3.client("sqs", region_name=REGION)
        sns = boto3.client("sns", region_name=REGION)
        location = {"CreateBucketConfiguration": {"LocationConstraint": REGION}}
        for bucket in (UPLOADS, PROCESSED):
            self.s3.create_bucket(Bucket=bucket, **location)
        self.s3.put_bucket_versioning(Bucket=UPLOADS, VersioningConfiguration={"Status": "Enabled"})
        self.s3.create_bucket(Bucket=BACKUP, ObjectLockEnabledForBucket=True, **location)
        self.s3.put_bucket_versioning(Bucket=BACKUP, VersioningConfiguration={"Status": "Enabled"})
        topic = sns.create_topic(Name="photos-events")["TopicArn"]
        self.queue = self.sqs.create_queue(QueueName="capture")["QueueUrl"]
        queue_arn = self.sqs.get_queue_attributes(QueueUrl=self.queue, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=queue_arn)
        self.s3.put_bucket_notification_configuration(Bucket=UPLOADS, NotificationConfiguration={
            "TopicConfigurations": [{
                "TopicArn": topic, "Events": ["s3:ObjectCreated:*", "s3:ObjectRemoved:*"],
                "Filter": {"Key": {"FilterRules": [{"Name": "prefix", "Value": "uploads/images/original/"}]}},
            }]})
        self.deliveries()  # drop the s3:TestEvent that configuring notifications sends

    def deliveries(self) -> list[dict]:
        """Each SNS notification captured so far, as the Lambda event that carries it."""
        events = []
        while True:
            messages = self.sqs.receive_message(QueueUrl=self.queue, MaxNumberOfMessages=10).get("Messages", [])
            if not messages:
                return events
            for message in messages:
                envelope = json.loads(message["Body"])
                events.append({"Records": [{"EventSource": "aws:sns", "EventVersion": "1.0",
                                            "EventSubscriptionArn": envelope["TopicArn"] + ":sub", "Sns": envelope}]})
                self.sqs.delete_message(QueueUrl=self.queue, ReceiptHandle=message["ReceiptHandle"])

    def keys(self, bucket: str, prefix: str = "") -> list[str]:
        return sorted(o["Key"] for o in self.s3.list_objects_v2(Bucket=bucket, Prefix=prefix).get("Contents", []))

    def backup_versions(self, key: str) -> set[str]:
        """The uploads-bucket versions of `key` that the backup bucket holds a copy of."""
        versions = self.s3.list_object_versions(Bucket=BACKUP, Prefix=key).get("Versions", [])
        return {self.s3.head_object(Bucket=BACKUP, Key=key, VersionId=v["VersionId"])["Metadata"]["source-version-id"]
                for v in versions if v["Key"] == key}

    def upload_versions(self, key: str) -> set[str]:
        versions = self.s3.list_object_versions(Bucket=UPLOADS, Prefix=key).get("Versions", [])
        return {v["VersionId"] for v in versions if v["Key"] == key}

    def manifest(self, path: str) -> dict | None:
        try:
            body = self.s3.get_object(Bucket=PROCESSED, Key=f"uploads/images/manifest/{path}.json")["Body"].read()
        except self.s3.exceptions.NoSuchKey:
            return None
        return json.loads(body)

    def state(self, bucket: str) -> dict[str, tuple]:
        """What a reader would notice of every object: key, ETag, last modified."""
        return {o["Key"]: (o["ETag"], o["LastModified"])
                for o in self.s3.list_objects_v2(Bucket=bucket).get("Contents", [])}
