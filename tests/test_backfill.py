"""The backfill's core against an in-process AWS: the decision from a manifest alone, apply_change
under a Scope, the backfill function's schema 2.0 tasks, and the plan's arithmetic."""

from __future__ import annotations

import io
import json

import pytest
from moto import mock_aws
from PIL import Image

from aws import PROCESSED, UPLOADS, Stack
from backfill_store import tiny_jpeg
from pipeline import handlers
from pipeline.backfill.core import (ERROR, FAILED, FAILED_EARLIER, RENDERED, UP_TO_DATE, backfill_one, decide,
                                    invalidation_prefixes, run_task, scope_arguments, scope_from_arguments)
from pipeline.backfill.plan import reservoir, scaled
from pipeline.config import PipelineConfig
from pipeline.events import ObjectChange
from pipeline.registry import _load_cached, load_registry
from pipeline.resize import LIVE, Scope, apply_change, needed
from pipeline.storage import S3Store

DEFAULTS = ["large", "medium", "small", "xsmall", "square_medium", "square_small"]
PANORAMA = """
    from pipeline.hookspecs import hookimpl
    from pipeline.types import Variation

    @hookimpl
    def register_variations(register):
        register(Variation("panorama", "cover", 120, 40))
"""


@pytest.fixture
def stack(monkeypatch):
    for name, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                        "AWS_DEFAULT_REGION": "eu-west-1", "UPLOADS_BUCKET": UPLOADS,
                        "PROCESSED_BUCKET": PROCESSED}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("PIPELINE_CONFIG", raising=False)
    handlers.s3_client.cache_clear()
    handlers._registry.cache_clear()
    _load_cached.cache_clear()
    with mock_aws():
        yield Stack()
    handlers.s3_client.cache_clear()
    handlers._registry.cache_clear()
    _load_cached.cache_clear()


def upload(stack, path: str, body: bytes, registry=None) -> str:
    key = f"uploads/images/original/{path}"
    stack.s3.put_object(Bucket=UPLOADS, Key=key, Body=body)
    stack.deliveries()
    apply_change(S3Store(stack.s3), ObjectChange("created", "ObjectCreated:Put", UPLOADS, key), PROCESSED,
                 registry or load_registry())
    return key


def backfill(stack, key: str, registry, scope: Scope = Scope(prune=False)):
    return backfill_one(S3Store(stack.s3), UPLOADS, key, PROCESSED, registry, scope)


def changed(before: dict, after: dict) -> list[str]:
    return sorted(k for k in after.keys() | before.keys() if before.get(k) != after.get(k))


def with_plugin(install_plugin):
    install_plugin("panorama_plugin", PANORAMA)
    _load_cached.cache_clear()
    return load_registry()


def test_the_decision_from_a_manifest_alone(stack, install_plugin):
    registry = load_registry()
    key = upload(stack, "a.jpg", tiny_jpeg(1))
    manifest = stack.manifest("a.jpg")
    assert needed(manifest, registry) == (frozenset(), frozenset(), "up to date", False)
    assert needed(None, registry).everything and needed(None, registry).render == frozenset(DEFAULTS)
    assert needed(manifest, registry, source_etag="other").everything, "a listing's ETag tells a changed original"
    smaller = load_registry(PipelineConfig.from_dict({"disabled_variations": ["xsmall"]}))
    assert needed(manifest, smaller, Scope(prune=True)).prune == {"xsmall"}
    two_fewer = load_registry(PipelineConfig.from_dict({"disabled_variations": ["xsmall", "small"]}))
    assert needed(manifest, two_fewer, Scope(prune=True)).reason == "no longer defined: small, xsmall"
    assert not needed(manifest, smaller, Scope(prune=False)).work, "without --prune an undefined variation stays"
    assert needed(manifest, registry, Scope(force=True)).render == frozenset(DEFAULTS)
    bigger = with_plugin(install_plugin)
    assert needed(manifest, bigger).render == {"panorama"}
    assert needed(manifest, bigger, Scope(variations=frozenset({"small"}))).work is False
    assert needed(manifest, bigger, Scope(variations=frozenset({"small"}), force=True)).render == {"small"}
    assert key


def test_adding_a_variation_puts_one_file_and_the_manifest_and_downloads_the_original_once(stack, install_plugin):
    key = upload(stack, "trip/IMG 1.jpg", tiny_jpeg(2))
    # A placeholder no render would make: the one kept must be the manifest's, not made again.
    placeholder = {**stack.manifest("trip/IMG 1.jpg")["placeholder"], "dominant_color": "#123456"}
    stack.s3.put_object(Bucket=PROCESSED, Key="uploads/images/manifest/trip/IMG 1.jpg.json",
                        Body=json.dumps({**stack.manifest("trip/IMG 1.jpg"), "placeholder": placeholder}).encode())
    before = stack.state(PROCESSED)
    calls = []

    def record(model, params, **kwargs) -> None:
        if "Key" in params:
            calls.append((model.name, params["Key"]))

    stack.s3.meta.events.register("provide-client-params.s3", record)
    result = backfill(stack, key, with_plugin(install_plugin))
    assert (result.status, result.detail) == (RENDERED, "rendered:panorama")
    assert changed(before, stack.state(PROCESSED)) == ["uploads/images/manifest/trip/IMG 1.jpg.json",
                                                        "uploads/images/panorama/trip/IMG 1.jpg"]
    assert [c[0] for c in calls] == ["GetObject", "GetObject", "PutObject", "PutObject"], calls
    manifest = stack.manifest("trip/IMG 1.jpg")
    assert set(manifest["variations"]) == set(DEFAULTS) | {"panorama"}
    assert manifest["placeholder"] == placeholder
    calls.clear()
    assert backfill(stack, key, load_registry()).status == UP_TO_DATE
    assert calls == [("GetObject", "uploads/images/manifest/trip/IMG 1.jpg.json")], "an unchanged image costs one GET"


def test_a_changed_quality_re_renders_exactly_that_variation(stack):
    key = upload(stack, "q.jpg", tiny_jpeg(3, (900, 600)))
    before = stack.state(PROCESSED)
    registry = load_registry(PipelineConfig.from_dict({"plugins": {"sizes": {"quality": {"small": 40}}}}))
    assert backfill(stack, key, registry).rendered == ("small",)
    assert changed(before, stack.state(PROCESSED)) == ["uploads/images/manifest/q.jpg.json", "uploads/images/small/q.jpg"]
    small = stack.s3.get_object(Bucket=PROCESSED, Key="uploads/images/small/q.jpg")
    assert small["Metadata"]["spec-hash"] == registry.spec_hash(registry.variations["small"])


def test_force_re_renders_the_chosen_variations_of_an_up_to_date_original(stack):
    key = upload(stack, "r.jpg", tiny_jpeg(7))
    registry = load_registry()
    assert backfill(stack, key, registry).status == UP_TO_DATE
    result = backfill(stack, key, registry, Scope(variations=frozenset({"small", "xsmall"}), force=True, prune=False))
    assert (result.status, result.rendered) == (RENDERED, ("small", "xsmall"))


def test_prune_deletes_only_the_undefined_variation_and_without_it_the_entry_stays(stack):
    key = upload(stack, "p.jpg", tiny_jpeg(4))
    smaller = load_registry(PipelineConfig.from_dict({"disabled_variations": ["xsmall"]}))
    before = stack.state(PROCESSED)
    assert backfill(stack, key, smaller).status == UP_TO_DATE
    assert stack.state(PROCESSED) == before
    result = backfill(stack, key, smaller, Scope(prune=True))
    assert (result.status, result.pruned) == (RENDERED, ("xsmall",))
    assert changed(before, stack.state(PROCESSED)) == ["uploads/images/manifest/p.jpg.json", "uploads/images/xsmall/p.jpg"]
    assert "uploads/images/xsmall/p.jpg" not in stack.state(PROCESSED)
    assert "xsmall" not in stack.manifest("p.jpg")["variations"]


def test_a_backfill_that_only_prunes_reads_the_original_with_a_head_not_a_download(stack):
    key = upload(stack, "h.jpg", tiny_jpeg(8))
    source = stack.manifest("h.jpg")["source"]
    smaller = load_registry(PipelineConfig.from_dict({"disabled_variations": ["xsmall"]}))
    calls = []
    stack.s3.meta.events.register("provide-client-params.s3",
                                  lambda model, params, **_: calls.append((model.name, params.get("Key"))))
    result = backfill(stack, key, smaller, Scope(prune=True))
    assert (result.status, result.pruned) == (RENDERED, ("xsmall",))
    assert [call for call in calls if call[1] == key] == [("HeadObject", key)]
    assert stack.manifest("h.jpg")["source"] == source, "the same version, size and sequencer as before"
    assert "uploads/images/xsmall/h.jpg" not in stack.state(PROCESSED)


def test_an_original_replaced_after_a_decision_to_prune_is_downloaded_and_rendered_whole(stack):
    key = upload(stack, "swap.jpg", tiny_jpeg(9))
    smaller = load_registry(PipelineConfig.from_dict({"disabled_variations": ["xsmall"]}))
    store, scope = S3Store(stack.s3), Scope(prune=True)
    decided = decide(store, PROCESSED, key, smaller, scope)
    assert decided[1].render == frozenset() and decided[1].prune == {"xsmall"}
    stack.s3.put_object(Bucket=UPLOADS, Key=key, Body=tiny_jpeg(10))  # its event not delivered yet
    etag = stack.s3.head_object(Bucket=UPLOADS, Key=key)["ETag"].strip('"')
    result = backfill_one(store, UPLOADS, key, PROCESSED, smaller, scope, decided=decided)
    assert result.status == RENDERED
    manifest = stack.manifest("swap.jpg")
    assert manifest["source"]["etag"] == etag and set(manifest["variations"]) == set(DEFAULTS) - {"xsmall"}
    for name in manifest["variations"]:
        made_from = stack.s3.head_object(Bucket=PROCESSED, Key=f"uploads/images/{name}/swap.jpg")["Metadata"]
        assert made_from["source-etag"] == etag, name
    assert "uploads/images/xsmall/swap.jpg" not in stack.state(PROCESSED)


def test_an_added_variation_keeps_the_undefined_ones_listed_without_prune(stack, install_plugin):
    key = upload(stack, "k.jpg", tiny_jpeg(5))
    with_plugin(install_plugin)
    both = load_registry(PipelineConfig.from_dict({"disabled_variations": ["xsmall"]}))  # panorama in, xsmall out
    result = backfill(stack, key, both)
    assert result.rendered == ("panorama",) and not result.pruned
    assert "xsmall" in stack.manifest("k.jpg")["variations"], "kept: the backfill deletes only with --prune"
    assert "uploads/images/xsmall/k.jpg" in stack.state(PROCESSED)


def test_a_failed_upload_is_retried_when_its_limits_change_or_with_retry_failed(stack):
    key = upload(stack, "f.jpg", tiny_jpeg(6, (900, 600)), load_registry(PipelineConfig.from_dict({"max_bytes": 1000})))
    assert stack.manifest("f.jpg")["status"] == "failed"
    same = load_registry(PipelineConfig.from_dict({"max_bytes": 1000}))
    earlier = backfill(stack, key, same)
    assert (earlier.key, earlier.status) == (key, FAILED_EARLIER)
    assert earlier.detail == stack.manifest("f.jpg")["reason"], "the recorded reason, without the 'failed: ' prefix"
    forced = backfill(stack, key, same, Scope(prune=False, retry_failed=True))
    assert forced.status == FAILED_EARLIER and "over the limit" in forced.detail, "judged again from its size"
    assert backfill(stack, key, load_registry()).status == RENDERED, "other limits: processed again"
    assert stack.manifest("f.jpg")["status"] == "ready"


def test_an_original_the_listing_shows_replaced_is_rendered_whole_though_its_manifest_looks_current(stack):
    """The listing's ETag tells, without a download, that the manifest describes earlier bytes (a
    replacement whose event went to the dead letters)."""
    key = upload(stack, "moved.jpg", tiny_jpeg(12))
    stack.s3.put_object(Bucket=UPLOADS, Key=key, Body=tiny_jpeg(13))  # its event never handled
    etag = stack.s3.head_object(Bucket=UPLOADS, Key=key)["ETag"].strip('"')
    registry = load_registry()
    assert backfill(stack, key, registry).status == UP_TO_DATE, "the manifest alone cannot tell"
    result = backfill_one(S3Store(stack.s3), UPLOADS, key, PROCESSED, registry, Scope(prune=False), listed_etag=etag)
    assert (result.status, result.rendered) == (RENDERED, tuple(DEFAULTS))
    assert stack.manifest("moved.jpg")["source"]["etag"] == etag


def test_a_corrupt_original_without_manifest_gets_a_failed_manifest(stack):
    key = "uploads/images/original/broken.jpg"
    stack.s3.put_object(Bucket=UPLOADS, Key=key, Body=tiny_jpeg(7)[:300])
    result = backfill(stack, key, load_registry())
    assert result.status == FAILED and "corrupt JPEG" in result.detail
    assert stack.manifest("broken.jpg")["status"] == "failed"


def test_a_live_upload_landing_during_the_backfill_is_not_overwritten(stack, install_plugin, monkeypatch):
    from pipeline import resize

    key = upload(stack, "race.jpg", tiny_jpeg(8, (300, 200)))
    bigger = with_plugin(install_plugin)
    render = resize.outputs_for_original
    injected = []

    def render_then_upload_version_2(*args, **kwargs):
        result = render(*args, **kwargs)
        if not injected:  # while the backfill renders version 1, version 2 lands and is processed live
            injected.append(True)
            upload(stack, "race.jpg", tiny_jpeg(9, (200, 300)), bigger)
        return result

    monkeypatch.setattr(resize, "outputs_for_original", render_then_upload_version_2)
    backfill(stack, key, bigger)
    manifest = stack.manifest("race.jpg")
    head = stack.s3.head_object(Bucket=UPLOADS, Key=key)
    assert manifest["source"]["etag"] == head["ETag"].strip('"')
    for name in DEFAULTS + ["panorama"]:
        obj = stack.s3.get_object(Bucket=PROCESSED, Key=f"uploads/images/{name}/race.jpg")
        assert obj["Metadata"]["source-etag"] == manifest["source"]["etag"], name
        image = Image.open(io.BytesIO(obj["Body"].read()))
        assert image.size == (manifest["variations"][name]["width"], manifest["variations"][name]["height"])


def task_event(key: str, bucket: str = UPLOADS, arguments: dict | None = None) -> dict:
    from urllib.parse import quote_plus

    return {"invocationSchemaVersion": "2.0", "invocationId": "YXNkbGZqYWRmaiBhc2RmdW9hZHNmZGpmaGFzbGtkaGZza2RmaAo",
            "job": {"id": "f3cc4f60-61f6-4a2b-8a21-d07600c373ce", "userArguments": arguments or {}},
            "tasks": [{"taskId": "dGFza2lkZ29lc2hlcmUK", "s3Key": quote_plus(key, safe="/"), "s3VersionId": None,
                       "s3Bucket": bucket}]}


@pytest.mark.parametrize("path", ["summer trip/IMG 0042.jpg", "a+b/c+d.jpg", "2026/caf\u00e9/\u5199\u771f \u2013 1.jpg"])
def test_the_backfill_function_takes_schema_2_tasks_with_awkward_keys(stack, path, install_plugin):
    key = upload(stack, path, tiny_jpeg(10))
    with_plugin(install_plugin)
    handlers._registry.cache_clear()
    response = handlers.backfill_handler(task_event(key, arguments=scope_arguments(Scope(prune=False))), None)
    assert response == {"invocationSchemaVersion": "2.0", "treatMissingKeysAs": "PermanentFailure",
                        "invocationId": task_event(key)["invocationId"],
                        "results": [{"taskId": "dGFza2lkZ29lc2hlcmUK", "resultCode": "Succeeded",
                                     "resultString": "rendered:panorama"}]}
    assert f"uploads/images/panorama/{path}" in stack.state(PROCESSED)
    again = handlers.backfill_handler(task_event(key), None)
    assert again["results"][0]["resultString"] == "up-to-date"
    chosen = scope_arguments(Scope(variations=frozenset({"small"}), force=True, prune=False))
    forced = handlers.backfill_handler(task_event(key, arguments=chosen), None)
    assert forced["results"][0]["resultString"] == "rendered:small", "the job's UserArguments are its scope"


def test_the_backfill_function_fails_an_unusable_original_permanently_and_throttling_temporarily(stack):
    stack.s3.put_object(Bucket=UPLOADS, Key="uploads/images/original/notes.jpg", Body=b"shopping list\n")
    (result,) = handlers.backfill_handler(task_event("uploads/images/original/notes.jpg"), None)["results"]
    assert result["resultCode"] == "PermanentFailure" and "not an image" in result["resultString"]
    (again,) = handlers.backfill_handler(task_event("uploads/images/original/notes.jpg"), None)["results"]
    assert again["resultCode"] == "Succeeded" and again["resultString"].startswith("failed-earlier: ")
    assert "not an image" in again["resultString"]
    (result,) = handlers.backfill_handler(task_event("uploads/images/original/x.jpg", bucket="elsewhere"), None)["results"]
    assert result["resultCode"] == "PermanentFailure" and "not an original of" in result["resultString"]

    from botocore.awsrequest import AWSResponse

    class Raw:
        def stream(self, **kwargs):
            yield b"<Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message></Error>"

    key = "uploads/images/original/slow.jpg"
    stack.s3.put_object(Bucket=UPLOADS, Key=key, Body=tiny_jpeg(11))
    handlers.s3_client().meta.events.register(
        "before-send.s3.GetObject", lambda request, **kw: AWSResponse(request.url, 503, {}, Raw()))
    (result,) = handlers.backfill_handler(task_event(key), None)["results"]
    assert result["resultCode"] == "TemporaryFailure" and result["resultString"].startswith("ClientError: ")
    assert "SlowDown" in result["resultString"]


def _client_error(code: str | None, status: int | None):
    from botocore.exceptions import ClientError

    response = {"Error": {"Code": code}} if code else {}
    return ClientError({**response, **({"ResponseMetadata": {"HTTPStatusCode": status}} if status else {})}, "GetObject")


def _failures():
    from botocore.exceptions import EndpointConnectionError, ReadTimeoutError

    from pipeline.resize import ContendedKey
    from pipeline.types import PluginFailure

    temporary = [ContendedKey("k: 5 rounds each lost the manifest to another writer"),
                 EndpointConnectionError(endpoint_url="https://s3.amazonaws.com"),
                 ReadTimeoutError(endpoint_url="https://s3.amazonaws.com"),
                 _client_error("SlowDown", 503), _client_error("InternalError", None),
                 _client_error("Unknown", 502), _client_error("503", None)]
    permanent = [_client_error("AccessDenied", 403), _client_error("404", 404), _client_error("NoSuchBucket", None),
                 _client_error(None, None), PluginFailure("og", "apply", "ValueError: no"), ValueError("no")]
    return [(e, "TemporaryFailure") for e in temporary] + [(e, "PermanentFailure") for e in permanent]


@pytest.mark.parametrize(("error", "code"), _failures(), ids=lambda e: type(e).__name__ if isinstance(e, Exception) else e)
def test_a_task_fails_temporarily_only_when_trying_again_can_help(error, code):
    """S3 Batch Operations redrives a TemporaryFailure; a PermanentFailure waits for --retry-from."""
    from pipeline.backfill.core import failure_code

    assert failure_code(error) == code


def test_user_arguments_round_trip_the_scope():
    for scope in (Scope(), Scope(variations=frozenset({"medium", "og"}), force=True, prune=False, retry_failed=True)):
        assert scope_from_arguments(scope_arguments(scope)) == scope
    assert scope_from_arguments(None) == Scope(prune=False)
    assert scope_from_arguments({"variations": "", "prune": "True"}) == Scope(prune=True), "none named: all; any case"


def test_one_wildcard_per_re_rendered_variation_and_one_path_for_many():
    registry = load_registry(PipelineConfig.from_dict({"plugins": {"webp": {"enabled": True}}}))
    assert invalidation_prefixes({"small"}, set(), registry) == [
        "uploads/images/manifest/", "uploads/images/small.webp/", "uploads/images/small/"]
    assert invalidation_prefixes(set(), set(), registry) == []
    assert len(invalidation_prefixes(set(DEFAULTS), set(), registry)) == 13
    assert len(invalidation_prefixes(set(DEFAULTS), {"gone"}, registry)) == 15, "15 wildcards at once are allowed"
    both = load_registry(PipelineConfig.from_dict({"plugins": {"webp": {"enabled": True}, "avif": {"enabled": True}}}))
    assert invalidation_prefixes(set(DEFAULTS), set(), both) == ["uploads/images/"], "over 15 wildcards: one"


def test_sampled_counts_have_error_bars_that_hold_the_truth():
    import random

    population = [i < 3000 for i in range(10000)]  # 30% need work
    rng = random.Random(7)
    inside = 0
    for _ in range(200):
        sample = reservoir(population, 400, rng)
        interval = scaled(sum(sample), 400, len(population))
        inside += interval.low <= 3000 <= interval.high
    assert inside >= 180, f"a 95% interval held the truth {inside} times in 200"
    assert scaled(5, 10, 10) == (5, 5, 5), "every manifest read: exact"


def test_what_needed_says_for_every_kind_of_manifest():
    """The whole decision, reason included: the dry run and the JSON report print it."""
    from pipeline.imaging import judging_limits

    registry = load_registry()
    defined = frozenset(registry.variations)
    source = {"key": "uploads/images/original/a.jpg", "etag": "e1", "version_id": "v1", "sequencer": None}
    ready = {"status": "ready", "source": source, "variations": {
        name: {"key": f"uploads/images/{name}/a.jpg", "spec_hash": registry.spec_hash(v), "alternates": []}
        for name, v in registry.variations.items()}}
    failed = {"status": "failed", "source": source, "variations": {}, "reason": "not an image",
              "limits": judging_limits(registry.config)}
    assert needed(None, registry) == (defined, frozenset(), "no manifest", True)
    assert needed({"status": "deleted", "source": source, "variations": {}}, registry) == (
        defined, frozenset(), "a removal is recorded but the original exists", True)
    assert needed(ready, registry, source_etag="e2") == (defined, frozenset(), "the manifest describes other bytes", True)
    assert needed(ready, registry, source_etag="e1") == (frozenset(), frozenset(), "up to date", False)
    assert needed(failed, registry) == (frozenset(), frozenset(), "failed: not an image", False)
    assert needed(failed, registry, Scope(retry_failed=True)) == (defined, frozenset(), "failed before; retried", True)
    assert needed({**failed, "limits": {"max_bytes": 1}}, registry) == (defined, frozenset(), "failed under other limits", True)
    stale = {**ready, "variations": {**ready["variations"], "small": {**ready["variations"]["small"], "spec_hash": "x"},
                                     "gone": {"key": "uploads/images/gone/a.jpg", "spec_hash": "y", "alternates": []}}}
    assert needed(stale, registry) == (frozenset({"small"}), frozenset({"gone"}), "missing or stale: small; no longer defined: gone", False)
    assert needed(stale, registry, Scope(prune=False)) == (frozenset({"small"}), frozenset(), "missing or stale: small", False)
    assert needed(ready, registry, Scope(force=True, variations=frozenset({"large", "medium"}))) == (
        frozenset({"large", "medium"}), frozenset(), "re-render: large, medium", False)
    assert not needed(ready, registry).work and needed(stale, registry).work


@pytest.mark.parametrize("seconds, said", [(0.0, "under 1 s"), (0.4, "under 1 s"), (0.7, "under 1 s"), (1.4, "about 1 s"),
                                           (2.5, "about 3 s"), (89, "about 89 s"), (90, "about 2 min"),
                                           (150, "about 3 min"), (210, "about 4 min"), (5399, "about 90 min"),
                                           (5400, "about 2 h"), (3600 * 1000, "about 1,000 h")])
def test_the_dry_run_says_how_long_in_words_a_person_reads(seconds, said):
    from pipeline.backfill.dry_run import duration

    assert duration(seconds) == said


def test_a_dry_run_that_could_time_no_render_says_what_it_assumed():
    from pipeline.backfill import pricing
    from pipeline.backfill.dry_run import describe

    counts = {"work": 5, "up_to_date": 0, "everything": 0, "failed_earlier": 0}
    result = {"counts": counts, "manifests_read": 5, "originals": 5, "uploads_bucket": "u", "processed_bucket": "p",
              "planning_seconds": 0.1, "sampled": False, "render": {"large": 5}, "prune": {}, "kept_undefined": {},
              "seconds_per_megapixel": None, "megapixels": 60.0, "original_bytes": 15_000_000, "calibrated_on": [],
              "unreadable_manifests": [], "invalidation_paths": [],
              "assumed_seconds_per_megapixel": pricing.SECONDS_PER_MEGAPIXEL}
    estimate = pricing.local_estimate(5, 5, 10, 0, 60.0, 15_000_000, pricing.SECONDS_PER_MEGAPIXEL, 1, 2, 0)
    text = "\n".join(describe(result, [estimate], 1, 10))
    assert "not measured here" in text and f"{pricing.SECONDS_PER_MEGAPIXEL * 1000:.0f} ms per megapixel assumed" in text
    assert "--engine local: $" in text and "about 3 s with 1 workers" in text  # 1.2 s of rendering, S3, start-up


def test_the_estimates_charge_for_what_the_run_would_do():
    from pipeline.backfill import pricing

    nothing = pricing.batch_estimate(300, 0, 0, 0, 0, 0.0, 0.02, 1769, "arm64", 10, 0)
    assert nothing.total == pricing.s3_lines(300, 0, 0, 0)[0].dollars + pricing.s3_lines(300, 0, 0, 0)[1].dollars, \
        "no job is created when nothing is to do"
    some = pricing.batch_estimate(300, 3, 3, 6, 0, 36.0, 0.02, 1769, "arm64", 10, 1)
    assert ("Batch Operations job", "1", pricing.PRICES["batch_job"]) in some.lines
    idle = pricing.local_estimate(300, 0, 0, 0, 0.0, 0, 0.02, 4, 4, 0)
    busy = pricing.local_estimate(300, 8, 16, 0, 96.0, 24_000_000, 0.02, 4, 4, 0)
    assert idle.seconds == 0 and busy.seconds == pytest.approx(pricing.WORKER_START_SECONDS + (96 * 0.02 + 8 * 0.15) / 4)
    # Eight workers on two cores render no faster than two; with none, this process renders on both.
    crowded = pricing.local_estimate(300, 8, 16, 0, 96.0, 24_000_000, 0.02, 8, 2, 0)
    assert crowded.seconds == pytest.approx(pricing.WORKER_START_SECONDS + 96 * 0.02 / 2 + 8 * 0.15 / 8)
    inline = pricing.local_estimate(300, 8, 16, 0, 96.0, 24_000_000, 0.02, 0, 2, 0)
    assert inline.seconds == pytest.approx(96 * 0.02 / 2 + 8 * 0.15), "no worker starts"


def test_the_dry_run_times_one_thread_on_originals_to_render_and_says_what_it_could_not(stack, monkeypatch, capsys):
    """Wired end to end in this process: prune-only originals are not timed, each render timed is
    on one thread (the figure is one core's), and what could not be timed is assumed, not zero."""
    import argparse

    from pipeline import imaging
    from pipeline.backfill import dry_run, pricing
    from pipeline.backfill.command import Context

    registry = load_registry()
    good = upload(stack, "good.jpg", tiny_jpeg(1, (400, 300)))
    broken = "uploads/images/original/broken.jpg"
    stack.s3.put_object(Bucket=UPLOADS, Key=broken, Body=b"\xff\xd8\xff" + bytes(200))  # no manifest: work
    stack.s3.delete_object(Bucket=PROCESSED, Key="uploads/images/manifest/good.jpg.json")
    threads, real_render = [], imaging.render
    monkeypatch.setattr(imaging, "render", lambda *a, **k: threads.append(k.get("threads")) or real_render(*a, **k))
    args = argparse.Namespace(prefix="", limit=None, sample=None, jobs=0, json=True, distribution_id=None)
    context = Context(args, {}, UPLOADS, PROCESSED, registry, registry.config, Scope(prune=False))
    assert dry_run.run(context) == 0
    timed = json.loads(capsys.readouterr().out)
    assert timed["calibrated_on"] == [good] and threads == [1, 1], "both tried on one thread; the broken one refused"
    assert timed["estimates"]["local"]["seconds"] > 0 and timed["assumed_seconds_per_megapixel"] is None

    stack.s3.delete_object(Bucket=UPLOADS, Key=good)
    threads.clear()
    args.json = False
    assert dry_run.run(context) == 0
    text = capsys.readouterr().out
    assert threads == [1], "the broken original was tried again, and refused"
    assert f"{pricing.SECONDS_PER_MEGAPIXEL * 1000:.0f} ms per megapixel assumed" in text
    assert "in this process" in text and "nothing would be invalidated" in text


def test_the_local_engines_workers_each_render_on_their_share_of_the_cpus(stack, monkeypatch):
    """Each worker process is set up to render on its share of the cores, not a thread per core each."""
    from pipeline import imaging
    from pipeline.backfill import local

    monkeypatch.setattr(local.signal, "signal", lambda *a: None)  # the test process keeps its Ctrl-C
    monkeypatch.setattr(local, "_worker", None)
    monkeypatch.setattr(imaging, "_cpus_shared_by", 1)
    monkeypatch.setattr(imaging.os, "sched_getaffinity", lambda pid: set(range(6)))
    monkeypatch.delenv(imaging.LAMBDA_MEMORY_VARIABLE, raising=False)
    local.init_worker(local.Work(UPLOADS, PROCESSED, "{}", Scope(prune=False)), 2)
    assert imaging.usable_cpus() == 3 and local._worker is not None
