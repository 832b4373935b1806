"""A model-based test: uploads, replacements and removals of one key, their events delivered in any
order, twice, or late; once every event has been handled, the buckets hold exactly what the final
state alone gives. hypothesis shrinks a failure to the shortest story."""

from __future__ import annotations

import itertools

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, rule

from aws import BACKUP, UPLOADS
from pipeline.backup import backup_created
from pipeline.events import object_changes
from pipeline.registry import load_registry
from pipeline.resize import apply_change
from pipeline.storage import S3Store
from test_interleavings import CONFIG, check_final_state, forget_run, stack, version_bytes  # noqa: F401 (stack: the module's moto)

EXAMPLES = itertools.count()


class _Trace:
    """What check_final_state reports a failure with: the story so far."""

    def __init__(self):
        self.trace, self.actors = [], {}


def test_events_in_any_order_twice_or_late_end_in_the_final_state(stack):
    class EventOrder(RuleBasedStateMachine):
        def __init__(self):
            super().__init__()
            index = next(EXAMPLES)
            self.results = {"key": f"uploads/images/original/model {index}/photo.jpg", "versions": [], "final": None,
                            "processed": f"model-processed-{index}"}
            stack.s3.create_bucket(Bucket=self.results["processed"],
                                   CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
            self.store, self.registry = S3Store(stack.s3), load_registry(CONFIG)
            self.events: list = []
            self.delivered: set[int] = set()
            self.story = _Trace()

        @rule(seed=st.integers(1, 3))
        def upload(self, seed):
            version = stack.s3.put_object(Bucket=UPLOADS, Key=self.results["key"], Body=version_bytes(seed))["VersionId"]
            self.results["versions"].append(version)
            self.results["final"] = seed
            self._collect(f"upload v{seed}")

        @rule()
        def remove(self):
            stack.s3.delete_object(Bucket=UPLOADS, Key=self.results["key"])
            self.results["final"] = None
            self._collect("remove")

        @rule(data=st.data())
        def deliver(self, data):
            """Any event, delivered or not: a first delivery, a duplicate, or a late one."""
            if self.events:
                index = data.draw(st.integers(0, len(self.events) - 1), label="event")
                self._handle(index)

        def _collect(self, what):
            for delivery in stack.deliveries():
                for change in object_changes(delivery, UPLOADS).accepted:
                    self.events.append(change)
                    self.story.trace.append((what, f"event {len(self.events) - 1}", []))

        def _handle(self, index):
            change = self.events[index]
            apply_change(self.store, change, self.results["processed"], self.registry)
            if change.kind == "created":
                backup_created(self.store, change, BACKUP)
            self.delivered.add(index)
            self.story.trace.append(("deliver", f"event {index}", []))

        def teardown(self):
            try:
                for index in range(len(self.events)):
                    if index not in self.delivered:
                        self._handle(index)
                if self.results["versions"]:
                    check_final_state(stack, self.results, self.story)
            finally:
                forget_run(stack, self.results)

    EventOrder.TestCase.settings = settings(max_examples=40, stateful_step_count=12, deadline=None,
                                            suppress_health_check=[HealthCheck.function_scoped_fixture])
    EventOrder.TestCase().runTest()
