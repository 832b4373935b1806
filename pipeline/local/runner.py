"""Lambda for the local stack: the topic's http deliveries in, the functions' invocations out.

Each function has an endpoint (`POST /resize`, `POST /backup`) that an http subscription of the
topic posts to. The runner answers a `SubscriptionConfirmation` as an endpoint must before SNS
delivers anything (ConfirmSubscription with the message's token, for the one topic it expects),
and turns each `Notification` into the event Lambda hands a function subscribed to a topic,
`{"Records": [{"EventSource": "aws:sns", ..., "Sns": <the envelope>}]}`, the message untouched.

SNS invokes Lambda asynchronously, so a delivery is answered at once and the invocation runs on a
worker pool (`concurrency` at a time, Lambda's concurrency). An invocation that raises is retried
with the same event after each of `retry_delays` (Lambda: two retries, about a minute and two
apart; here seconds by default), then the event goes to the dead-letter list (Lambda: the
dead-letter queue), which the log and the page show.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import traceback
import uuid
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote_plus

from pipeline.local import DEFAULT_CONCURRENCY, DEFAULT_RETRY_DELAYS
from pipeline.local.servers import Handler, LocalServer

log = logging.getLogger("pipeline.local")


@dataclass
class DeadLetter:
    function: str
    event: dict
    error: str  # the last attempt's exception
    attempts: int
    at: float  # time.time() of the last attempt

    def to_dict(self) -> dict:
        return {"function": self.function, "error": self.error, "attempts": self.attempts, "at": self.at,
                "keys": event_keys(self.event), "event": self.event}


@dataclass
class Attempt:
    """One finished invocation: what the function returned per record, or what it raised."""

    function: str
    request_id: str
    attempt: int
    started: float  # time.monotonic()
    finished: float
    results: list[dict] = field(default_factory=list)
    error: str | None = None
    objects: list[tuple[str, str | None]] = field(default_factory=list)  # what its event named: event_objects


@dataclass
class LambdaContext:
    """The attributes of Lambda's context object that code reads."""

    function_name: str
    aws_request_id: str
    memory_limit_in_mb: int = 0
    function_version: str = "$LATEST"
    invoked_function_arn: str = ""
    log_group_name: str = ""
    log_stream_name: str = "local"

    def get_remaining_time_in_millis(self) -> int:
        return 60_000


def lambda_event(envelope: Mapping[str, Any], subscription_arn: str) -> dict:
    """The event Lambda invokes a topic's subscriber with, for one message SNS posted over http."""
    return {"Records": [{
        "EventSource": "aws:sns", "EventVersion": "1.0", "EventSubscriptionArn": subscription_arn,
        "Sns": {"Type": envelope["Type"], "MessageId": envelope["MessageId"], "TopicArn": envelope["TopicArn"],
                "Subject": envelope.get("Subject"), "Message": envelope["Message"],
                "Timestamp": envelope["Timestamp"], "SignatureVersion": envelope.get("SignatureVersion"),
                "Signature": envelope.get("Signature"), "SigningCertUrl": envelope.get("SigningCertURL"),
                "UnsubscribeUrl": envelope.get("UnsubscribeURL"),
                "MessageAttributes": envelope.get("MessageAttributes", {})},
    }]}


def event_keys(event: Mapping[str, Any]) -> list[str]:
    """The S3 keys an SNS event's messages name, decoded, for the log and the page."""
    return [key for key, _ in event_objects(event)]


def event_objects(event: Mapping[str, Any]) -> list[tuple[str, str | None]]:
    """The S3 objects an SNS event's messages name: (key, decoded; version id, None unversioned)."""
    found = []
    for record in event.get("Records", []):
        try:
            message = json.loads(record["Sns"]["Message"])
        except (KeyError, TypeError, ValueError):
            continue
        for s3_record in message.get("Records", []) if isinstance(message, dict) else []:
            obj = s3_record.get("s3", {}).get("object", {})
            if obj.get("key"):
                found.append((unquote_plus(obj["key"]), obj.get("versionId")))
    return found


class FunctionRunner:
    def __init__(self, functions: Mapping[str, Callable[[dict, Any], Any]], *, sns_client: Any = None,
                 concurrency: int = DEFAULT_CONCURRENCY, retry_delays: Sequence[float] = DEFAULT_RETRY_DELAYS,
                 port: int = 0):
        if concurrency < 1:
            raise ValueError(f"concurrency must be at least 1, not {concurrency}")
        self.functions = dict(functions)
        self.sns = sns_client
        self.concurrency = concurrency
        self.retry_delays = tuple(retry_delays)
        self.topic_arn: str | None = None  # the one topic whose subscriptions are confirmed
        self.subscriptions: dict[str, str] = {}  # function -> confirmed subscription ARN
        self.dead_letters: list[DeadLetter] = []
        self.attempts: deque[Attempt] = deque(maxlen=100_000)
        self._pending = 0  # invocations queued, running or waiting for a retry
        self._idle = threading.Condition()
        self._timers: set[threading.Timer] = set()
        self._stopping = False
        self._pool = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="lambda")
        self.server = LocalServer("functions", _Endpoint, self, port)

    @property
    def url(self) -> str:
        return self.server.url

    def endpoint(self, function: str) -> str:
        return f"{self.url}/{function}"

    def start(self) -> FunctionRunner:
        self.server.start()
        return self

    def stop(self) -> None:
        """No more deliveries, no more retries; invocations already running finish."""
        self.server.stop()
        with self._idle:
            self._stopping = True
            timers, self._timers = self._timers, set()
        for timer in timers:
            timer.cancel()
        self._pool.shutdown(wait=True, cancel_futures=True)

    def wait_idle(self, timeout: float) -> bool:
        """Wait until no invocation is queued, running or due for a retry; False on timeout."""
        with self._idle:
            return self._idle.wait_for(lambda: self._pending == 0, timeout)

    @property
    def in_flight(self) -> int:
        return self._pending

    # What the endpoint calls.

    def confirm(self, function: str, message: Mapping[str, Any]) -> bool:
        if self.topic_arn is None or message.get("TopicArn") != self.topic_arn or self.sns is None:
            log.warning("%s: refused a subscription confirmation for %s", function, message.get("TopicArn"))
            return False
        answer = self.sns.confirm_subscription(TopicArn=message["TopicArn"], Token=message["Token"])
        self.subscriptions[function] = answer["SubscriptionArn"]
        log.debug("%s: confirmed %s", function, answer["SubscriptionArn"])
        return True

    def deliver(self, function: str, envelope: Mapping[str, Any], subscription_arn: str | None) -> None:
        arn = subscription_arn or self.subscriptions.get(function) or f"{envelope['TopicArn']}:local-{function}"
        self._submit(function, lambda_event(envelope, arn), 1)

    # Invocations.

    def _submit(self, function: str, event: dict, attempt: int, *, counted: bool = False) -> None:
        with self._idle:
            if self._stopping:
                if counted:
                    self._finished()
                return
            if not counted:
                self._pending += 1
        self._pool.submit(self._invoke, function, event, attempt)

    def _invoke(self, function: str, event: dict, attempt: int) -> None:
        request_id = str(uuid.uuid4())
        context = LambdaContext(function, request_id, invoked_function_arn=f"local:function:{function}")
        started = time.monotonic()
        try:
            result = self.functions[function](event, context)
        except Exception as error:  # noqa: BLE001 - Lambda's asynchronous retry takes over
            summary = "".join(traceback.format_exception_only(error)).strip()
            self.attempts.append(Attempt(function, request_id, attempt, started, time.monotonic(), error=summary,
                                         objects=event_objects(event)))
            if attempt == 1:  # what raised, once per event (the handler raises after its records' turn)
                cause = error.__cause__ or error
                log.warning("%s", "".join(traceback.format_exception(cause)).rstrip())
            self._failed(function, event, attempt, summary)
            return
        results = list((result or {}).get("results", [])) if isinstance(result, dict) else []
        self.attempts.append(Attempt(function, request_id, attempt, started, time.monotonic(), results,
                                     objects=event_objects(event)))
        milliseconds = (time.monotonic() - started) * 1000
        for entry in results:
            reason = f" ({entry['reason']})" if entry.get("reason") else ""
            log.info("%-6s %-10s %s%s  %.0f ms", function, entry.get("outcome"), entry.get("key"), reason,
                     milliseconds)
        with self._idle:
            self._finished()

    def _failed(self, function: str, event: dict, attempt: int, error: str) -> None:
        keys = ", ".join(event_keys(event)) or "(no keys)"
        if attempt <= len(self.retry_delays):
            delay = self.retry_delays[attempt - 1]
            log.warning("%-6s error      %s: attempt %d failed, retrying in %g s: %s", function, keys, attempt,
                        delay, error)
            with self._idle:
                if not self._stopping:
                    timer = threading.Timer(delay, self._retry, (function, event, attempt + 1))
                    timer.daemon = True
                    self._timers.add(timer)
                    timer.start()
                    return
                self._finished()
            return
        self.dead_letters.append(DeadLetter(function, event, error, attempt, time.time()))
        log.error("%-6s DEAD LETTER %s: %d attempts failed; last: %s", function, keys, attempt, error)
        with self._idle:
            self._finished()

    def _retry(self, function: str, event: dict, attempt: int) -> None:
        with self._idle:
            self._timers.discard(threading.current_thread())  # the Timer that called this
        self._submit(function, event, attempt, counted=True)

    def _finished(self) -> None:
        """Called holding self._idle."""
        self._pending -= 1
        if self._pending == 0:
            self._idle.notify_all()


class _Endpoint(Handler):
    """POST /<function>: what SNS posts to an http subscriber."""

    def do_POST(self) -> None:  # noqa: N802 - BaseHTTPRequestHandler's name
        runner: FunctionRunner = self.owner
        function = self.path.strip("/")
        if function not in runner.functions:
            self.send(404)
            return
        try:
            message = json.loads(self.body())
            kind = message["Type"]
        except (ValueError, KeyError, TypeError):
            self.send(400)
            return
        if kind == "SubscriptionConfirmation":
            self.send(200 if runner.confirm(function, message) else 403)
        elif kind == "Notification":
            runner.deliver(function, message, self.headers.get("x-amz-sns-subscription-arn"))
            self.send(200)
        else:  # UnsubscribeConfirmation, or anything newer
            log.info("%s: %s from %s", function, kind, message.get("TopicArn"))
            self.send(200)
