"""A burst through the local stack: 500 uploads from 8 threads, 5% of them broken files, 20 of them
replacements and 20 deletions of keys uploaded earlier in the burst. Afterwards every surviving
original has a manifest of its final version, every deleted one a tombstone and no variation,
every version is in the backup and no event is a dead letter. Prints uploads per second and the
time from upload to manifest (`pytest -s` shows it)."""

from __future__ import annotations

import random
import statistics
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from pipeline import keys, samples
from pipeline.local.topology import LocalStack

UPLOADS, THREADS = 500, 8
BROKEN, REPLACED, DELETED = 25, 20, 20
SIZES = [(64, 48), (96, 64), (120, 90), (160, 120), (200, 150), (240, 180), (320, 240), (48, 64), (90, 120)]


def bodies(count: int, rng: random.Random) -> list[bytes]:
    """A few distinct small JPEGs, reused: the pipeline judges each upload by its own bytes anyway."""
    return [samples.jpeg_bytes(samples.photo(*rng.choice(SIZES), seed=seed, grain=8), quality=80)
            for seed in range(count)]


def broken_file(index: int) -> bytes:
    good = samples.jpeg_bytes(samples.photo(64, 48, seed=index, grain=0))
    return [b"this is not an image at all", good[: len(good) // 2], b"\x89PNG\r\n\x1a\n" + b"\0" * 40][index % 3]


def test_a_burst_of_uploads_replacements_and_deletions():
    rng = random.Random(20261130)
    images = bodies(12, rng)
    first = UPLOADS - REPLACED  # new keys; the other uploads replace some of them
    paths = [f"load/{i:03d} {'café ' if i % 4 == 0 else ''}photo.jpg" for i in range(first)]
    early = rng.sample(range(first // 2), REPLACED + DELETED)  # uploaded in the burst's first half
    replaced, deleted = early[:REPLACED], early[REPLACED:]
    broken = set(rng.sample(sorted(set(range(first)) - set(replaced)), BROKEN))  # a replacement is a good image
    operations = [("put", i, broken_file(i) if i in broken else images[i % len(images)]) for i in range(first)]
    for number, i in enumerate(replaced):  # spread over the second half of the burst
        operations.insert(first // 2 + number * 10, ("replace", i, images[(i + 5) % len(images)]))
    for number, i in enumerate(deleted):
        operations.insert(first // 2 + number * 10 + 5, ("delete", i, b""))
    assert sum(1 for op, _, _ in operations if op in ("put", "replace")) == UPLOADS

    with LocalStack(concurrency=3, retry_delays=(0.05, 0.1)) as stack:
        bucket = stack.buckets["uploads"]
        done = {i: threading.Event() for i in range(first)}
        put_at: dict[int, float] = {}
        local = threading.local()

        def run(operation) -> None:
            op, i, body = operation
            if not hasattr(local, "s3"):
                local.s3 = stack.client("s3")
            key = keys.original_key(paths[i])
            if op == "put":
                local.s3.put_object(Bucket=bucket, Key=key, Body=body, ContentType="image/jpeg")
                put_at[i] = time.monotonic()
                done[i].set()
                return
            assert done[i].wait(60), f"{paths[i]} was never uploaded"
            if op == "replace":
                local.s3.put_object(Bucket=bucket, Key=key, Body=body, ContentType="image/jpeg")
            else:
                local.s3.delete_object(Bucket=bucket, Key=key)

        started = time.monotonic()
        with ThreadPoolExecutor(THREADS) as pool:
            list(pool.map(run, operations))
        burst = time.monotonic() - started
        assert stack.wait_idle(120), f"{stack.runner.in_flight} invocations still running after two minutes"
        settled = time.monotonic() - started

        s3 = stack.client("s3")
        assert stack.runner.dead_letters == [], [letter.error for letter in stack.runner.dead_letters]
        current = {}
        for page in s3.get_paginator("list_object_versions").paginate(Bucket=bucket, Prefix="uploads/images/original/load/"):
            for version in page.get("Versions", []):
                if version["IsLatest"]:
                    current[version["Key"]] = version
        processed = {o["Key"] for page in s3.get_paginator("list_objects_v2").paginate(
            Bucket=stack.buckets["processed"]) for o in page.get("Contents", [])}
        for i, path in enumerate(paths):
            manifest = stack.manifest(path, s3)
            variations = {key for key in processed if key.endswith("/" + path) and not key.startswith(keys.MANIFEST_PREFIX)}
            if i in deleted:
                assert keys.original_key(path) not in current
                assert manifest["status"] == "deleted" and manifest["variations"] == {}, path
                assert variations == set(), path
                continue
            version = current[keys.original_key(path)]
            assert manifest["source"]["version_id"] == version["VersionId"], path
            assert manifest["source"]["etag"] == version["ETag"].strip('"'), path
            if i in broken:
                assert manifest["status"] == "failed" and manifest["variations"] == {}, path
            else:
                assert manifest["status"] == "ready", (path, manifest.get("reason"))
                assert variations == {entry["key"] for entry in manifest["variations"].values()}, path

        uploaded = {}
        for page in s3.get_paginator("list_object_versions").paginate(Bucket=bucket, Prefix="uploads/images/original/load/"):
            for version in page.get("Versions", []):
                uploaded[version["VersionId"]] = version["Key"]
        backed_up = {}
        backup = stack.buckets["backup"]
        for page in s3.get_paginator("list_object_versions").paginate(Bucket=backup, Prefix="uploads/images/original/load/"):
            for version in page.get("Versions", []):
                head = s3.head_object(Bucket=backup, Key=version["Key"], VersionId=version["VersionId"])
                backed_up[head["Metadata"]["source-version-id"]] = version["Key"]
        assert len(uploaded) == UPLOADS and backed_up == uploaded

        # Upload to manifest: from a put's answer to the end of the first resize invocation of its key.
        resized = {}
        for attempt in stack.runner.attempts:
            for result in attempt.results:
                if attempt.function == "resize" and result["outcome"] in ("processed", "failed"):
                    resized.setdefault(result["key"], attempt.finished)
        latencies = sorted(resized[keys.original_key(paths[i])] - put_at[i] for i in range(first)
                           if i not in replaced and i not in deleted)
        p50, p95 = statistics.median(latencies), latencies[int(len(latencies) * 0.95) - 1]
        print(f"\nlocal stack load: {UPLOADS} uploads ({BROKEN} broken, {REPLACED} replacements) and {DELETED} "
              f"deletions from {THREADS} threads, {stack.concurrency} invocations at a time")
        print(f"  burst {burst:.1f} s: {UPLOADS / burst:.1f} uploads/s; all settled after {settled:.1f} s "
              f"({UPLOADS / settled:.1f} uploads/s end to end)")
        print(f"  upload to manifest: p50 {p50 * 1000:.0f} ms, p95 {p95 * 1000:.0f} ms (n={len(latencies)}); "
              f"{sum(1 for a in stack.runner.attempts if a.error)} invocations raised and were retried")
