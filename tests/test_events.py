"""Event intake: SNS-wrapped S3 notifications into typed changes (fixtures in tests/events/)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipeline.events import MalformedEvent, ObjectChange, object_changes

EVENTS = Path(__file__).parent / "events"


def load(name: str) -> dict:
    return json.loads((EVENTS / name).read_text())


def test_a_put_is_a_created_change_with_its_key_decoded():
    assert list(object_changes(load("sns_s3_put.json"))) == [ObjectChange(
        "created", "ObjectCreated:Put", "photos-uploads-dev",
        "uploads/images/original/2026/summer trip/IMG 0042 \u2013 caf\u00e9+1.jpg",
        3145728, "d41d8cd98f00b204e9800998ecf8427e", "0062D1A0B3C4D5E6F7")]


def test_a_delete_is_a_removed_change():
    (change,) = object_changes(load("sns_s3_delete.json"))
    assert change.kind == "removed" and change.key.endswith("IMG 0042 \u2013 caf\u00e9+1.jpg")


def test_s3_test_events_are_ignored():
    assert list(object_changes(load("sns_s3_test_event.json"))) == []


def test_a_batch_keeps_originals_and_drops_other_keys_and_events():
    changes = list(object_changes(load("sns_s3_batch.json")))
    assert [(c.kind, c.key, c.etag) for c in changes] == [
        ("created", "uploads/images/original/a.jpg", "9b2cf535f27731c974343645a3985328-2"),
        ("removed", "uploads/images/original/b.png", None),
    ]


def test_a_record_without_an_s3_message_is_malformed():
    with pytest.raises(MalformedEvent):
        list(object_changes({"Records": [{"EventSource": "aws:sns", "Sns": {"Message": "not json"}}]}))
