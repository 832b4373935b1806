"""The local stack: the topology the Pulumi program deploys, on 127.0.0.1, in this one process.

    S3 and SNS   moto's ThreadedMotoServer, made to send events, confirm http subscriptions and
                 carry out each S3 request as AWS does (s3_notifications, sns_subscriptions,
                 moto_requests): the uploads bucket (versioned), the processed bucket, the backup
                 bucket (versioned, object lock but no default retention: moto refuses a
                 CopyObject into a bucket with one unless it carries Content-MD5, which a copy
                 has no body for), CORS for the page's origin as the stack's
                 corsOrigins would give, the topic, the uploads bucket's notification (the same
                 events and prefix filter as infra/events.py) and two http subscriptions;
    functions    FunctionRunner: resize_handler and backup_handler behind those subscriptions;
    CDN          LocalCdn: the distribution's routing and headers;
    page         PageServer: upload, watch and delete photos from a browser.

The functions run in this process, so this process's environment is theirs: start() sets what the
stack sets for them (the bucket names, PIPELINE_CONFIG) and what points boto3 here (endpoint,
region, dummy credentials), removes what could send a request elsewhere (CDN_DISTRIBUTION_ID, a
profile, per-service endpoints), and stop() puts the environment back as it was.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pipeline import keys
from pipeline.events import NOTIFICATION_EVENTS
from pipeline.local import DEFAULT_CONCURRENCY, DEFAULT_RETRY_DELAYS
from pipeline.local.runner import FunctionRunner
from pipeline.local.servers import HOST

log = logging.getLogger("pipeline.local")

REGION = "eu-west-1"
ACCESS_KEY_ID, SECRET_ACCESS_KEY = "local", "local"  # moto takes any credentials
BUCKETS = {"uploads": "image-pipeline-local-uploads", "processed": "image-pipeline-local-processed",
           "backup": "image-pipeline-local-backup"}
TOPIC = "image-pipeline-local-events"
# As infra/storage.py: the CORS rules the stack's corsOrigins give.
UPLOADS_CORS = {"AllowedMethods": ["POST"], "ExposeHeaders": ["ETag"], "MaxAgeSeconds": 3600}
PROCESSED_CORS = {"AllowedMethods": ["GET", "HEAD"], "AllowedHeaders": ["*"], "MaxAgeSeconds": 3600}
# Variables that would send the stack's own requests elsewhere or make boto3 refuse the endpoint.
REMOVED_VARIABLES = ("CDN_DISTRIBUTION_ID", "AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_SESSION_TOKEN",
                     "AWS_SECURITY_TOKEN", "AWS_IGNORE_CONFIGURED_ENDPOINT_URLS", "AWS_USE_FIPS_ENDPOINT",
                     "AWS_USE_DUALSTACK_ENDPOINT")
REMOVED_PREFIXES = ("AWS_ENDPOINT_URL_",)
QUIET = logging.CRITICAL + 10


@dataclass(frozen=True)
class Ports:
    """0: a free port, chosen when the server starts."""

    page: int = 0
    cdn: int = 0
    s3: int = 0
    functions: int = 0


class StackError(RuntimeError):
    """The local stack could not start or did not converge in time."""


# moto keeps its state per process, and the functions read the process's environment: one stack
# per process at a time.
_running: list[LocalStack] = []


class LocalStack:
    def __init__(self, *, ports: Ports = Ports(), concurrency: int = DEFAULT_CONCURRENCY,
                 retry_delays: Sequence[float] = DEFAULT_RETRY_DELAYS, pipeline_config: str | None = None,
                 functions: Mapping[str, Callable] | None = None, function_log_level: int = QUIET):
        """`pipeline_config`: the JSON of PIPELINE_CONFIG (None: the process's own, if any).
        `functions`: the handlers by name (default: resize and backup, pipeline.handlers').
        `function_log_level`: the level the handlers' own JSON log lines print from (QUIET: none;
        the runner logs one line per record and the traceback of a failure anyway)."""
        self.ports, self.concurrency, self.retry_delays = ports, concurrency, tuple(retry_delays)
        self.pipeline_config = pipeline_config if pipeline_config is not None else os.environ.get("PIPELINE_CONFIG")
        self._functions = functions
        self._function_log_level = function_log_level
        self.buckets = dict(BUCKETS)
        self.topic_arn: str | None = None
        self.moto = self.runner = self.cdn = self.page = None
        self._saved_environment: dict[str, str | None] | None = None
        self._session, self._session_lock = None, threading.Lock()
        self._functions_state: _FunctionsState | None = None

    # Addresses.

    @property
    def s3_url(self) -> str:
        host, port = self.moto.get_host_and_port()
        return f"http://{host}:{port}"

    @property
    def cdn_url(self) -> str:
        return self.cdn.url

    @property
    def page_url(self) -> str:
        return self.page.url + "/"

    @property
    def functions_url(self) -> str:
        return self.runner.url

    def environment(self) -> dict[str, str]:
        """What points the AWS CLI, boto3 and `image-pipeline` at this stack, bucket names included."""
        environment = {"AWS_ENDPOINT_URL": self.s3_url, "AWS_REGION": REGION, "AWS_DEFAULT_REGION": REGION,
                       "AWS_ACCESS_KEY_ID": ACCESS_KEY_ID, "AWS_SECRET_ACCESS_KEY": SECRET_ACCESS_KEY,
                       "UPLOADS_BUCKET": self.buckets["uploads"], "PROCESSED_BUCKET": self.buckets["processed"],
                       "BACKUP_BUCKET": self.buckets["backup"]}
        if self.pipeline_config:
            environment["PIPELINE_CONFIG"] = self.pipeline_config
        return environment

    def client(self, service: str, **options: Any):
        """A boto3 client of this stack's, whatever the environment says (from one session, which
        reads the service's model once, under a lock: a session is not safe across threads)."""
        import boto3

        with self._session_lock:
            if self._session is None:
                self._session = boto3.session.Session()
            return self._session.client(
                service, endpoint_url=self.s3_url, region_name=REGION, aws_access_key_id=ACCESS_KEY_ID,
                aws_secret_access_key=SECRET_ACCESS_KEY, **options)

    # Life cycle.

    def __enter__(self) -> LocalStack:
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()

    def start(self) -> LocalStack:
        if _running:
            raise StackError("a local stack already runs in this process (moto's state and the functions' "
                             "environment are the process's); stop it first")
        _running.append(self)
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        return self

    def _start(self) -> None:
        from moto.server import ThreadedMotoServer

        from pipeline.local.cdn import LocalCdn
        from pipeline.local.page import PageServer
        from pipeline.local.s3_notifications import patch_moto
        from pipeline.local.moto_requests import patch_moto_requests
        from pipeline.local.sns_subscriptions import patch_moto_sns

        patch_moto()  # versionId, sequencers and delete-marker events, as S3 sends them
        patch_moto_sns()  # http subscriptions confirmed by their endpoint before anything is delivered
        patch_moto_requests()  # each S3 request atomic, as S3 makes it; listings without copying everything
        logging.getLogger("werkzeug").setLevel(logging.ERROR)  # moto's server logs every request

        self.moto = ThreadedMotoServer(ip_address=HOST, port=self.ports.s3, verbose=False)
        self.moto.start()
        import requests

        requests.post(f"{self.s3_url}/moto-api/reset", timeout=30).raise_for_status()  # a fresh AWS
        self._saved_environment = _set_environment(self.environment())
        self._functions_state = _FunctionsState(self._function_log_level)
        s3, sns = self.client("s3"), self.client("sns")

        self.page = PageServer(self, port=self.ports.page)
        browser_origins = [self.page.url, self.page.url.replace(HOST, "localhost")]
        self.cdn = LocalCdn(self.client("s3"), {"uploads": self.buckets["uploads"],
                                               "processed": self.buckets["processed"]},
                            cors_origins=browser_origins, port=self.ports.cdn)
        self._create_buckets(s3, browser_origins)

        self.topic_arn = sns.create_topic(Name=TOPIC)["TopicArn"]
        self.runner = FunctionRunner(self._functions or _lambda_functions(), sns_client=sns,
                                     concurrency=self.concurrency, retry_delays=self.retry_delays,
                                     port=self.ports.functions)
        self.runner.topic_arn = self.topic_arn
        self.runner.start()
        subscriptions = [sns.subscribe(TopicArn=self.topic_arn, Protocol="http", Endpoint=self.runner.endpoint(name),
                                       ReturnSubscriptionArn=True)["SubscriptionArn"]
                         for name in self.runner.functions]
        self._wait_confirmed(sns, subscriptions)
        s3.put_bucket_notification_configuration(Bucket=self.buckets["uploads"], NotificationConfiguration={
            "TopicConfigurations": [{
                "Id": "originals", "TopicArn": self.topic_arn, "Events": list(NOTIFICATION_EVENTS),
                "Filter": {"Key": {"FilterRules": [{"Name": "prefix", "Value": keys.ORIGINAL_PREFIX}]}}}]})
        self.cdn.start()
        self.page.start()

    def _create_buckets(self, s3, browser_origins: list[str]) -> None:
        location = {"CreateBucketConfiguration": {"LocationConstraint": REGION}}
        uploads, processed, backup = (self.buckets[role] for role in ("uploads", "processed", "backup"))
        s3.create_bucket(Bucket=uploads, **location)
        s3.put_bucket_versioning(Bucket=uploads, VersioningConfiguration={"Status": "Enabled"})
        s3.put_bucket_cors(Bucket=uploads, CORSConfiguration={"CORSRules": [
            {**UPLOADS_CORS, "AllowedOrigins": browser_origins}]})
        s3.create_bucket(Bucket=processed, **location)
        s3.put_bucket_cors(Bucket=processed, CORSConfiguration={"CORSRules": [
            {**PROCESSED_CORS, "AllowedOrigins": browser_origins}]})
        s3.create_bucket(Bucket=backup, ObjectLockEnabledForBucket=True, **location)
        s3.put_bucket_versioning(Bucket=backup, VersioningConfiguration={"Status": "Enabled"})

    def _wait_confirmed(self, sns, subscriptions: list[str], timeout: float = 15) -> None:
        deadline = time.monotonic() + timeout
        while True:
            pending = [arn for arn in subscriptions if sns.get_subscription_attributes(SubscriptionArn=arn)
                       ["Attributes"].get("PendingConfirmation") != "false"]
            if not pending:
                return
            if time.monotonic() > deadline:
                raise StackError(f"the function runner did not confirm {', '.join(pending)} in {timeout:g} s")
            time.sleep(0.02)

    def stop(self) -> None:
        """Stop everything this stack started, newest first; safe to call twice."""
        for part in (self.page, self.cdn, self.runner):
            if part is not None:
                part.stop()
        self.page = self.cdn = self.runner = None
        if self.moto is not None:
            self.moto.stop()
            self.moto = None
        if self._functions_state is not None:
            self._functions_state.restore()
            self._functions_state = None
        if self._saved_environment is not None:
            _restore_environment(self._saved_environment)
            self._saved_environment = None
        if self in _running:
            _running.remove(self)

    # What tests, the demo and the page ask of it.

    def wait_idle(self, timeout: float = 60) -> bool:
        """Every event so far has reached the functions and been handled (or dead-lettered)."""
        from pipeline.local.sns_subscriptions import deliveries_pending, wait_delivered

        deadline = time.monotonic() + timeout
        while True:
            # A delivery hands its event to the runner before it counts as done: deliveries first.
            if not wait_delivered(max(0.0, deadline - time.monotonic())):
                return False
            if not self.runner.wait_idle(max(0.0, deadline - time.monotonic())):
                return False
            if deliveries_pending() == 0:
                return True

    def manifest(self, path: str, s3=None) -> dict | None:
        s3 = s3 or self.client("s3")
        try:
            body = s3.get_object(Bucket=self.buckets["processed"], Key=keys.manifest_key(path))["Body"].read()
        except s3.exceptions.NoSuchKey:
            return None
        return json.loads(body)

    def wait_for_manifest(self, path: str, *, version_id: str | None = None, deleted: bool = False,
                          timeout: float = 60, interval: float = 0.05) -> dict:
        """The manifest of `path` once it is "ready" or "failed" for `version_id` (any version when
        None), or with `deleted` once it is the tombstone."""
        s3 = self.client("s3")
        deadline = time.monotonic() + timeout
        while True:
            manifest = self.manifest(path, s3)
            if manifest is not None:
                if deleted and manifest["status"] == "deleted":
                    return manifest
                if not deleted and manifest["status"] in ("ready", "failed") and (
                        version_id is None or manifest["source"].get("version_id") == version_id):
                    return manifest
            if time.monotonic() > deadline:
                raise StackError(f"no {'tombstone' if deleted else 'manifest'} for {path!r} after {timeout:g} s; "
                                 f"last seen: {manifest and manifest.get('status')}")
            time.sleep(interval)


def _lambda_functions() -> dict[str, Callable]:
    from pipeline.handlers import backup_handler, resize_handler

    return {"resize": resize_handler, "backup": backup_handler}


def _set_environment(values: Mapping[str, str]) -> dict[str, str | None]:
    """Set `values`, remove REMOVED_VARIABLES; return what restores the environment."""
    removed = [name for name in os.environ if name in REMOVED_VARIABLES or name.startswith(REMOVED_PREFIXES)]
    saved = {name: os.environ.get(name) for name in (*values, *removed)}
    for name in removed:
        del os.environ[name]
    os.environ.update(values)
    return saved


def _restore_environment(saved: Mapping[str, str | None]) -> None:
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


class _FunctionsState:
    """pipeline.handlers as a fresh Lambda environment: no client or registry made under another
    environment, log lines from `log_level`, and no metrics. There is no CloudWatch here, and
    powertools keeps one metric set per process, which invocations running side by side in one
    process would garble (Lambda runs one invocation per environment at a time). restore() puts
    everything back."""

    def __init__(self, log_level: int):
        from pipeline import handlers

        self.handlers = handlers
        self._clear_caches()
        self._logger = logging.getLogger(handlers.logger.name)  # the standard logger under powertools'
        self._log_level = self._logger.level
        self._logger.setLevel(log_level)
        provider = handlers.metrics.provider
        provider.add_metric = lambda *args, **kwargs: None
        provider.flush_metrics = lambda *args, **kwargs: None

    def _clear_caches(self) -> None:
        for cached in (self.handlers.s3_client, self.handlers.cloudfront_client, self.handlers._registry):
            cached.cache_clear()

    def restore(self) -> None:
        self._clear_caches()
        self._logger.setLevel(self._log_level)
        provider = self.handlers.metrics.provider
        for name in ("add_metric", "flush_metrics"):
            provider.__dict__.pop(name, None)
