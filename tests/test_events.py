"""Event intake: SNS-wrapped S3 notifications into typed changes (fixtures in tests/events/)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipeline.events import MalformedEvent, ObjectChange, object_changes, sequencer_order

EVENTS = Path(__file__).parent / "events"
BUCKET = "photos-uploads-dev"


def load(name: str) -> dict:
    return json.loads((EVENTS / name).read_text())


def wrap(*records) -> dict:
    return {"Records": [{"EventSource": "aws:sns", "Sns": {"Message": json.dumps({"Records": list(records)})}}]}


def test_a_put_is_a_created_change_with_its_key_decoded_version_and_sequencer():
    assert object_changes(load("sns_s3_put.json"), BUCKET).accepted == [ObjectChange(
        "created", "ObjectCreated:Put", BUCKET,
        "uploads/images/original/2026/summer trip/IMG 0042 \u2013 caf\u00e9+1.jpg",
        3145728, "d41d8cd98f00b204e9800998ecf8427e", "0062D1A0B3C4D5E6F7", "3HL4kqtJlcpXroDTDmJ.rmSpXd3dIbrHY")]


def test_a_delete_is_a_removed_change():
    (change,) = object_changes(load("sns_s3_delete.json"), BUCKET).accepted
    assert change.kind == "removed" and change.key.endswith("IMG 0042 \u2013 caf\u00e9+1.jpg")
    assert change.sequencer == "0062D1A0B3C4D5E6F7" and change.size is None


def test_s3_test_events_are_ignored():
    assert object_changes(load("sns_s3_test_event.json"), BUCKET) == ([], [])


def test_a_batch_keeps_originals_and_drops_other_keys_and_events():
    intake = object_changes(load("sns_s3_batch.json"), BUCKET)
    assert [(c.kind, c.key, c.etag) for c in intake.accepted] == [
        ("created", "uploads/images/original/a.jpg", "9b2cf535f27731c974343645a3985328-2"),
        ("removed", "uploads/images/original/b.png", None),
    ]
    assert intake.dropped == [(BUCKET, "uploads/images/large/a.jpg", "outside 'uploads/images/original/'")]


def test_a_record_for_another_bucket_is_dropped_with_the_reason():
    record = {"eventName": "ObjectRemoved:Delete",
              "s3": {"bucket": {"name": "photos-processed"}, "object": {"key": "uploads/images/original/a.jpg"}}}
    intake = object_changes(wrap(record), BUCKET)
    assert intake.accepted == []
    assert intake.dropped == [("photos-processed", "uploads/images/original/a.jpg",
                               "not the uploads bucket 'photos-uploads-dev'")]


def test_other_event_kinds_are_skipped():
    record = {"eventName": "ObjectTagging:Put", "s3": {"bucket": {"name": BUCKET}, "object": {"key": "uploads/images/original/a.jpg"}}}
    assert object_changes(wrap(record), BUCKET) == ([], [])


@pytest.mark.parametrize("event, missing", [
    ({"Records": [{"EventSource": "aws:sns", "Sns": {"Message": "not json"}}]}, "SNS record without a JSON S3 message"),
    ({"Records": [{"EventSource": "aws:sns"}]}, r"SNS record without a JSON S3 message: KeyError\('Sns'\)"),
    (wrap({"eventName": "ObjectCreated:Put", "s3": {"bucket": {"name": BUCKET}}}), "S3 record without 'object'"),
    (wrap({"s3": {"bucket": {"name": BUCKET}, "object": {"key": "k"}}}), "S3 record without 'eventName'"),
])
def test_a_record_without_an_s3_message_is_malformed(event, missing):
    """The error (logged, and the message dead-lettered) says which field the record lacks."""
    with pytest.raises(MalformedEvent, match=missing):
        object_changes(event, BUCKET)


@pytest.mark.parametrize("earlier, later", [
    ("0062D1A0B3C4D5E6F7", "0062D1A0B3C4D5E6F8"),
    ("62D1A0B3C4D5E6F7", "0062D1A0B3C4D5E6F8"),  # S3: left-pad the shorter with zeros, then compare
    ("0A", "0b"),
    ("FF", "0100"),
    ("0", "1"),
])
def test_sequencers_compare_as_s3_says(earlier, later):
    assert sequencer_order(earlier) < sequencer_order(later)
    assert sequencer_order("00FF") == sequencer_order("ff")
    assert sequencer_order(None) is None


@pytest.mark.parametrize("etag, read", [("abc123", "abc123"), ('"abc123"', "abc123"), (None, None)])
def test_a_created_records_etag_is_read_without_quotes_and_may_be_absent(etag, read):
    obj = {"key": "uploads/images/original/a.jpg", "size": 3, **({"eTag": etag} if etag else {})}
    record = {"eventName": "ObjectCreated:Put", "s3": {"bucket": {"name": BUCKET}, "object": obj}}
    (change,), _ = object_changes(wrap(record), BUCKET)
    assert change.kind == "created" and change.etag == read


@pytest.mark.parametrize("event", [
    {},  # a test invocation from the console
    {"Records": [{"EventSource": "aws:sns", "Sns": {"Message": "[]"}}]},
    {"Records": [{"EventSource": "aws:sns", "Sns": {"Message": '"a plain text notice"'}}]},
    {"Records": [{"EventSource": "aws:sns", "Sns": {"Message": '{"Event": "s3:TestEvent", "Bucket": "b"}'}}]},
    {"Records": [{"EventSource": "aws:sns", "Sns": {"Message": '{"Service": "Amazon S3"}'}}]},
])
def test_an_event_with_no_s3_records_changes_nothing(event):
    assert object_changes(event, BUCKET) == ([], [])


def test_a_record_that_changes_nothing_does_not_hide_the_records_after_it():
    created = {"eventName": "ObjectCreated:Put",
               "s3": {"bucket": {"name": BUCKET}, "object": {"key": "uploads/images/original/a.jpg"}}}
    tagged = {**created, "eventName": "ObjectTagging:Put"}
    test_event = {"EventSource": "aws:sns", "Sns": {"Message": '{"Event": "s3:TestEvent"}'}}
    event = {"Records": [test_event, *wrap(tagged, created)["Records"]]}
    assert [change.key for change in object_changes(event, BUCKET).accepted] == ["uploads/images/original/a.jpg"]


def test_a_key_whose_urls_would_resolve_to_another_originals_is_dropped_with_the_reason():
    record = {"eventName": "ObjectCreated:Put",
              "s3": {"bucket": {"name": BUCKET}, "object": {"key": "uploads/images/original/a/../b.jpg"}}}
    assert object_changes(wrap(record), BUCKET).dropped == [(BUCKET, "uploads/images/original/a/../b.jpg",
        "an empty, '.' or '..' path segment: its URLs would resolve to another original's")]
