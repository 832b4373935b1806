"""The backfill, measured: planning time per 1,000 manifests against a moto server, local
rendering throughput (12 MP photos, one core, adding one variation versus all six) and the S3
requests per image of each, and what adding one variation costs per million images.

    .venv/bin/python benchmarks/backfill.py [--photos N] [--manifests N]      (part of `make bench`)
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from backfill_store import client, make_buckets, moto_server  # noqa: E402

from pipeline import keys  # noqa: E402
from pipeline.backfill import local, pricing  # noqa: E402
from pipeline.backfill.plan import Listing, plan_store  # noqa: E402
from pipeline.backfill.report import Summary  # noqa: E402
from pipeline.config import PipelineConfig  # noqa: E402
from pipeline.outputs import outputs_for_original  # noqa: E402
from pipeline.registry import load_registry  # noqa: E402
from pipeline.resize import Scope  # noqa: E402

ADDED = "medium"  # the variation "added": 1280 px, the size of a typical new one (og is 1200x630)


def planning(count: int) -> float:
    """Seconds to list and read `count` manifests (all up to date) with the planner's threads."""
    s3 = client()
    make_buckets(s3, "bench-plan-uploads", "bench-plan-processed")
    registry = load_registry()
    from PIL import Image
    import io

    buffer = io.BytesIO()
    Image.new("RGB", (64, 48), (90, 120, 150)).save(buffer, "JPEG")
    body = buffer.getvalue()
    template = outputs_for_original("uploads/images/original/x.jpg", body, "etag", registry).manifest
    etag = s3.put_object(Bucket="bench-plan-uploads", Key="uploads/images/original/seed.jpg", Body=body)["ETag"].strip('"')
    from concurrent.futures import ThreadPoolExecutor

    def put(index: int) -> None:
        path = f"2026/{index % 10}/photo {index:06d}.jpg"
        s3.put_object(Bucket="bench-plan-uploads", Key=keys.original_key(path), Body=body)
        manifest = {**template, "source": {**template["source"], "key": keys.original_key(path), "etag": etag}}
        s3.put_object(Bucket="bench-plan-processed", Key=keys.manifest_key(path), Body=json.dumps(manifest).encode())

    with ThreadPoolExecutor(16) as pool:
        list(pool.map(put, range(count)))
    s3.delete_object(Bucket="bench-plan-uploads", Key="uploads/images/original/seed.jpg")
    counting = local.CountingStore(local.s3_client())
    listing = Listing(local.s3_client(), "bench-plan-uploads")
    started = time.perf_counter()
    tally, work = plan_store(counting.store, listing, "bench-plan-processed", registry, Scope(prune=False))
    seconds = time.perf_counter() - started
    assert tally.originals == count and tally.up_to_date == count, tally
    return seconds


def rendering(photo: bytes, photos: int) -> dict[str, dict]:
    """Images per second on one core and S3 requests per image: adding one variation, then all six."""
    s3 = client()
    make_buckets(s3, "bench-render-uploads", "bench-render-processed")
    for index in range(photos):
        s3.put_object(Bucket="bench-render-uploads", Key=f"uploads/images/original/2026/IMG_{index:04d}.jpg",
                      Body=photo)
    without = PipelineConfig.from_dict({"disabled_variations": [ADDED]})
    cases = {"seed": (without, Scope()), f"add one ({ADDED})": (PipelineConfig(), Scope(prune=False)),
             "all six (--force)": (PipelineConfig(), Scope(force=True, prune=False))}
    measured = {}
    for name, (config, scope) in cases.items():
        work = local.Work("bench-render-uploads", "bench-render-processed", config.to_json(), scope)
        summary = Summary("local", work.uploads_bucket, work.processed_bucket, {})
        started = time.perf_counter()
        local.run(work, Listing(local.s3_client(), work.uploads_bucket), summary, jobs=0)
        seconds = time.perf_counter() - started
        assert summary.counts["rendered"] == photos, summary.counts
        measured[name] = {"seconds": seconds, "per_image": seconds / photos,
                          "requests": {op: n / photos for op, n in sorted(summary.requests.items())}}
    del measured["seed"]
    return measured


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=int, default=8, help="12 MP photos rendered per case (default 8)")
    parser.add_argument("--manifests", type=int, default=2000, help="manifests planned (default 2000)")
    args = parser.parse_args()
    sys.path.insert(0, str(HERE))
    from bench import make_photo

    cpu = min(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {cpu})  # one core: the rendering is per core, as in one Lambda vCPU
    photo = make_photo("12 MP").read_bytes()
    with moto_server():
        seconds = planning(args.manifests)
        print(f"backfill: planning against a moto server on 127.0.0.1 (one process, "
              f"{local.PLANNING_THREADS} threads, one core)")
        print(f"  {args.manifests:,} manifests read in {seconds:.2f} s: {seconds / args.manifests * 1000:.2f} s per "
              f"1,000 (AWS answers a GET in ~20-50 ms; with 16 threads that is ~1-3 s per 1,000)")
        cases = rendering(photo, args.photos)
    print(f"backfill: local rendering of {args.photos} 12 MP JPEGs (4032x3024, {len(photo) / 1e6:.1f} MB), one core")
    print(f"  {'case':<22}{'s/image':>9}{'images/s/core':>15}   S3 requests per image")
    for name, case in cases.items():
        requests = ", ".join(f"{op} {n:g}" for op, n in case["requests"].items())
        print(f"  {name:<22}{case['per_image']:>9.3f}{1 / case['per_image']:>15.2f}   {requests}")
    one = cases[f"add one ({ADDED})"]
    per_image = one["per_image"]
    gb_s = (per_image + pricing.LAMBDA_IO_SECONDS) * pricing.LAMBDA_MEMORY_MB / 1024
    lines = [("Lambda duration", f"1e6 x ({per_image:.3f} s + {pricing.LAMBDA_IO_SECONDS} s I/O) x "
                                 f"{pricing.LAMBDA_MEMORY_MB / 1024:.3f} GB x ${pricing.PRICES['lambda_gb_second_arm64']}",
              1e6 * gb_s * pricing.PRICES["lambda_gb_second_arm64"]),
             ("Lambda requests", "1e6 x $0.20 / 1e6", 1e6 * pricing.PRICES["lambda_request"]),
             ("S3 GET", "1e6 x 2 (manifest, original) x $0.0004 / 1e3", 2e6 * pricing.PRICES["s3_get"]),
             ("S3 PUT", "1e6 x 2 (variation, manifest) x $0.005 / 1e3", 2e6 * pricing.PRICES["s3_put"]),
             ("S3 LIST", "1e6 / 1000 x $0.005 / 1e3", 1e3 * pricing.PRICES["s3_list"]),
             ("Batch Operations", "$0.25 + 1e6 x $1.00 / 1e6", pricing.PRICES["batch_job"] + 1e6 * pricing.PRICES["batch_task"]),
             ("CloudFront", "2 wildcard paths x $0.005", 2 * pricing.PRICES["invalidation_path"])]
    print(f"backfill: adding one variation to a million 12 MP images, --engine batch (arm64, "
          f"{pricing.LAMBDA_MEMORY_MB} MB; this machine's time per image)")
    for what, arithmetic, dollars in lines:
        print(f"  {what:<18}{arithmetic:<70}${dollars:>8.2f}")
    print(f"  {'total':<88}${sum(d for *_, d in lines):>8.2f}   (the system it replaces: $91.67)")


if __name__ == "__main__":
    main()
