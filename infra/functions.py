"""The resize and backup functions: artifact, least-privilege roles, logs, retries, DLQ, alarms."""

from __future__ import annotations

import json
from dataclasses import dataclass

import pulumi
import pulumi_aws as aws

from infra import policies
from infra.artifact import build
from pipeline.caching import DISTRIBUTION_ENV
from pipeline.config import FUNCTION_ENVIRONMENT

HANDLERS = {"resize": "pipeline.handlers.resize_handler", "backup": "pipeline.handlers.backup_handler"}
DEAD_LETTER_RETENTION_S = 14 * 24 * 3600


@dataclass
class FunctionsArgs:
    settings: "object"  # infra.config.StackSettings
    buckets: dict[str, aws.s3.Bucket]
    topic: aws.sns.Topic
    distribution: aws.cloudfront.Distribution  # whose changed paths the resize function invalidates


class Functions(pulumi.ComponentResource):
    def __init__(self, name: str, args: FunctionsArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("imagepipeline:index:Functions", name, None, opts)
        settings, buckets = args.settings, args.buckets
        child = pulumi.ResourceOptions(parent=self)
        artifact = build(settings.architecture, settings.python_version)
        pulumi.log.info(artifact.report())
        if not artifact.compiler:
            pulumi.log.warn(f"no python{settings.python_version} on this machine: the functions ship without bytecode "
                            f"and compile their modules on every cold start (~120 ms, benchmarks/cold_start.py)")
        runtime = f"python{settings.python_version}"
        layer = aws.lambda_.LayerVersion(
            f"{name}-dependencies", layer_name=f"{pulumi.get_project()}-{pulumi.get_stack()}-dependencies",
            code=pulumi.FileArchive(str(artifact.layer_zip)), compatible_runtimes=[runtime],
            compatible_architectures=[settings.architecture], opts=child)
        self.artifact, self.layer, self.runtime = artifact, layer, runtime  # the backfill function shares them
        self.dead_letters = aws.sqs.Queue(
            f"{name}-dead-letters", message_retention_seconds=DEAD_LETTER_RETENTION_S,
            sqs_managed_sse_enabled=True, opts=child)

        self.alarm_topic = None
        if settings.alarm_email:
            self.alarm_topic = aws.sns.Topic(f"{name}-alarms", opts=child)
            aws.sns.TopicSubscription(f"{name}-alarms-email", topic=self.alarm_topic.arn, protocol="email",
                                      endpoint=settings.alarm_email, opts=child)
        alarm_actions = [self.alarm_topic.arn] if self.alarm_topic else []

        s3_documents = {
            "resize": pulumi.Output.all(buckets["uploads"].bucket, buckets["processed"].bucket,
                                        args.distribution.arn).apply(
                lambda b: json.dumps(policies.resize_s3_policy(b[0], b[1], b[2]))),
            "backup": pulumi.Output.all(buckets["uploads"].bucket, buckets["backup"].bucket).apply(
                lambda b: json.dumps(policies.backup_s3_policy(b[0], b[1]))),
        }
        environments = {
            "resize": {"UPLOADS_BUCKET": buckets["uploads"].bucket,
                       "PROCESSED_BUCKET": buckets["processed"].bucket,
                       "PIPELINE_CONFIG": settings.pipeline.to_json(),
                       DISTRIBUTION_ENV: args.distribution.id,
                       "POWERTOOLS_SERVICE_NAME": "image-pipeline-resize", **FUNCTION_ENVIRONMENT},
            "backup": {"UPLOADS_BUCKET": buckets["uploads"].bucket,
                       "BACKUP_BUCKET": buckets["backup"].bucket,
                       "POWERTOOLS_SERVICE_NAME": "image-pipeline-backup"},
        }
        sizes = {"resize": (settings.resize_memory_mb, settings.resize_timeout_s),
                 "backup": (settings.backup_memory_mb, settings.backup_timeout_s)}

        self.functions: dict[str, aws.lambda_.Function] = {}
        self.roles: dict[str, aws.iam.Role] = {}
        for role_name, handler in HANDLERS.items():
            function_name = f"{pulumi.get_project()}-{pulumi.get_stack()}-{role_name}"
            log_group = aws.cloudwatch.LogGroup(
                f"{name}-{role_name}-logs", name=f"/aws/lambda/{function_name}",
                retention_in_days=settings.log_retention_days, opts=child)
            role = aws.iam.Role(f"{name}-{role_name}-role",
                                assume_role_policy=json.dumps(policies.assume_role_by_lambda()), opts=child)
            self.roles[role_name] = role
            s3_access = aws.iam.RolePolicy(f"{name}-{role_name}-s3", role=role.id, policy=s3_documents[role_name],
                                           opts=child)
            runtime_access = aws.iam.RolePolicy(
                f"{name}-{role_name}-runtime", role=role.id, opts=child,
                policy=pulumi.Output.all(log_group.arn, self.dead_letters.arn).apply(
                    lambda v: json.dumps(policies.runtime_policy(v[0], v[1]))))
            memory, timeout = sizes[role_name]
            function = aws.lambda_.Function(
                f"{name}-{role_name}", name=function_name, role=role.arn, runtime=runtime, handler=handler,
                architectures=[settings.architecture], code=pulumi.FileArchive(str(artifact.code_zip)),
                layers=[layer.arn], memory_size=memory, timeout=timeout,
                reserved_concurrent_executions=settings.reserved_concurrency,
                environment={"variables": environments[role_name]},
                logging_config={"log_format": "Text", "log_group": log_group.name},
                opts=pulumi.ResourceOptions(parent=self, depends_on=[log_group, s3_access, runtime_access]))
            self.functions[role_name] = function
            aws.lambda_.FunctionEventInvokeConfig(
                f"{name}-{role_name}-async", function_name=function.name,
                maximum_retry_attempts=settings.max_retries,
                maximum_event_age_in_seconds=settings.max_event_age_s,
                destination_config={"on_failure": {"destination": self.dead_letters.arn}}, opts=child)
            permission = aws.lambda_.Permission(
                f"{name}-{role_name}-from-topic", action="lambda:InvokeFunction", function=function.name,
                principal="sns.amazonaws.com", source_arn=args.topic.arn, opts=child)
            aws.sns.TopicSubscription(
                f"{name}-{role_name}-subscription", topic=args.topic.arn, protocol="lambda",
                endpoint=function.arn, opts=pulumi.ResourceOptions(parent=self, depends_on=[permission]))
            aws.cloudwatch.MetricAlarm(
                f"{name}-{role_name}-errors", namespace="AWS/Lambda", metric_name="Errors",
                dimensions={"FunctionName": function.name}, statistic="Sum", period=300, evaluation_periods=1,
                threshold=1, comparison_operator="GreaterThanOrEqualToThreshold", treat_missing_data="notBreaching",
                alarm_description=f"The {role_name} function raised errors (retries follow, then the DLQ)",
                alarm_actions=alarm_actions, ok_actions=alarm_actions, opts=child)
        aws.cloudwatch.MetricAlarm(
            f"{name}-dead-letters-waiting", namespace="AWS/SQS", metric_name="ApproximateNumberOfMessagesVisible",
            dimensions={"QueueName": self.dead_letters.name}, statistic="Maximum", period=300, evaluation_periods=1,
            threshold=1, comparison_operator="GreaterThanOrEqualToThreshold", treat_missing_data="notBreaching",
            alarm_description="Upload events failed after every retry; they wait in the dead-letter queue",
            alarm_actions=alarm_actions, ok_actions=alarm_actions, opts=child)
        self.register_outputs({"dead_letter_queue_url": self.dead_letters.url})
