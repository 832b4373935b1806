"""Make moto's SNS deliver to http(s) endpoints as AWS does: confirmation first, then messages,
asynchronously.

moto 5.2 confirms an http or https subscription the moment it is made, posts nothing to the
endpoint before the first message, and posts each message from inside the request that published
it (for an S3 event: inside the S3 request that changed the object, before S3 answers). AWS posts
a `SubscriptionConfirmation` (with a `Token` and a `SubscribeURL`) to the endpoint, keeps the
subscription `PendingConfirmation` and delivers nothing to it until the endpoint confirms with
that token (ConfirmSubscription, which is what the SubscribeURL calls); it delivers each message
on its own time, with the `x-amz-sns-*` headers, retrying a failed delivery. `patch_moto_sns()`
adds exactly that, once per process; `deliveries_pending()` says how many are still on their way.
"""

from __future__ import annotations

import json
import logging
import secrets
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from urllib.parse import urlencode

log = logging.getLogger("pipeline.local")

DELIVERY_THREADS = 4
DELIVERY_ATTEMPTS = 3  # SNS's default http policy retries too, with back-off; this is enough on one machine
_lock = threading.Lock()
_patched = False
_tokens: dict[str, object] = {}  # token -> the moto Subscription waiting for it
_pending = 0
_idle = threading.Condition(_lock)
_sessions = threading.local()
_executor: ThreadPoolExecutor | None = None


def patch_moto_sns() -> None:
    global _patched, _executor
    with _lock:
        if _patched:
            return
        _patched = True
        _executor = ThreadPoolExecutor(DELIVERY_THREADS, thread_name_prefix="sns-delivery")
    from moto.sns import models, responses
    from moto.sns.exceptions import SNSInvalidParameter

    subscribe = models.SNSBackend.subscribe

    def subscribe_pending(self, topic_arn, endpoint, protocol):
        known = self._find_subscription(topic_arn, endpoint, protocol)
        subscription = subscribe(self, topic_arn, endpoint, protocol)
        if protocol in ("http", "https") and subscription is not known:
            subscription.attributes["PendingConfirmation"] = "true"
            token = secrets.token_hex(64)
            with _lock:
                _tokens[token] = subscription
            _submit(subscription.endpoint, confirmation_message(subscription, token), None)
        return subscription

    publish = models.Subscription.publish

    def publish_later(self, message, message_id, subject=None, message_attributes=None, group_id=None,
                      deduplication_id=None, message_structure=None):
        if self.protocol not in ("http", "https"):
            return publish(self, message, message_id, subject=subject, message_attributes=message_attributes,
                           group_id=group_id, deduplication_id=deduplication_id,
                           message_structure=message_structure)
        if self.attributes.get("PendingConfirmation") == "true":
            return None  # AWS delivers nothing to an endpoint that has not confirmed
        if self._filter_policy_matcher is not None and not self._filter_policy_matcher.matches(
                message_attributes, message):
            return None
        if message_structure == "json":
            message = self._parse_message_structure(message, self.protocol)
        _submit(self.endpoint, lambda: self.get_post_data(message, message_id, subject), self.arn)
        return None

    def confirm_subscription(self):
        token, topic_arn = self._get_param("Token"), self._get_param("TopicArn")
        with _lock:
            subscription = _tokens.get(token)
        if subscription is None or subscription.topic.arn != topic_arn:
            raise SNSInvalidParameter("Invalid parameter: Token")
        subscription.attributes["PendingConfirmation"] = "false"
        subscription.confirmed = True
        return responses.ActionResult({"SubscriptionArn": subscription.arn})

    models.SNSBackend.subscribe = subscribe_pending
    models.Subscription.publish = publish_later
    responses.SNSResponse.confirm_subscription = confirm_subscription


def deliveries_pending() -> int:
    """Messages and confirmations accepted by SNS and not yet answered by their endpoint."""
    return _pending


def wait_delivered(timeout: float) -> bool:
    with _idle:
        return _idle.wait_for(lambda: _pending == 0, timeout)


def confirmation_message(subscription, token: str) -> dict:
    """The body SNS posts to a new http(s) endpoint (its signature fields left out)."""
    topic_arn = subscription.topic.arn
    region = topic_arn.split(":")[3]
    query = urlencode({"Action": "ConfirmSubscription", "TopicArn": topic_arn, "Token": token})
    return {"Type": "SubscriptionConfirmation", "MessageId": secrets.token_hex(16), "Token": token,
            "TopicArn": topic_arn,
            "Message": f"You have chosen to subscribe to the topic {topic_arn}.\n"
                       "To confirm the subscription, visit the SubscribeURL included in this message.",
            "SubscribeURL": f"https://sns.{region}.amazonaws.com/?{query}",
            "Timestamp": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z",
            "SignatureVersion": "2"}


def _submit(endpoint: str, body, subscription_arn: str | None) -> None:
    """Deliver `body` (a dict, or what makes it: signing happens on the delivery thread) later."""
    global _pending
    with _lock:
        _pending += 1
    _executor.submit(_deliver, endpoint, body, subscription_arn)


def _deliver(endpoint: str, body, subscription_arn: str | None) -> None:
    global _pending
    import requests

    try:
        message = body() if callable(body) else body
        headers = {"Content-Type": "text/plain; charset=UTF-8", "x-amz-sns-message-type": message["Type"],
                   "x-amz-sns-message-id": message["MessageId"], "x-amz-sns-topic-arn": message["TopicArn"]}
        if subscription_arn:
            headers["x-amz-sns-subscription-arn"] = subscription_arn
        if not hasattr(_sessions, "session"):
            _sessions.session = requests.Session()  # keep-alive to the endpoint
        data = json.dumps(message)
        for attempt in range(1, DELIVERY_ATTEMPTS + 1):
            try:
                response = _sessions.session.post(endpoint, data=data, headers=headers, timeout=30)
                if response.status_code < 500:
                    return
            except requests.RequestException as error:
                log.debug("SNS delivery to %s failed: %r", endpoint, error)
            time.sleep(0.1 * attempt)
        log.warning("SNS gave up delivering %s to %s", message.get("Type"), endpoint)
    finally:
        with _idle:
            _pending -= 1
            if _pending == 0:
                _idle.notify_all()
