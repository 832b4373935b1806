"""`--dry-run`: what a backfill would render and what each engine would cost; nothing is written.

Every manifest is read (a thread pool of GETs), or a uniform random sample of them (`--sample N`,
for large stores: counts are then scaled to the store with 95% error bars). The time per
megapixel is measured on this machine by rendering, in this process, up to three of the originals
that need work (downloaded, never written back).
"""

from __future__ import annotations

import json
import math
import time

from pipeline.backfill import pricing
from pipeline.backfill.core import invalidation_prefixes
from pipeline.backfill.plan import Listing, Planned, Tally, plan_store, scaled
from pipeline.backfill.report import EXIT_OK

CALIBRATION_ORIGINALS = 3


def run(context) -> int:
    from pipeline.backfill import local

    args, registry = context.args, context.registry
    client = local.s3_client()
    counting = local.CountingStore(client)
    listing = Listing(local.s3_client(), context.uploads, args.prefix, args.limit)
    started = time.perf_counter()
    tally, work = plan_store(counting.store, listing, context.processed, registry, context.scope, sample=args.sample)
    planning_seconds = time.perf_counter() - started
    rendering = [planned for planned in work if planned.need.render]  # not those with only files to prune
    per_megapixel, calibrated_on = measure(counting.store, context.uploads, rendering[:CALIBRATION_ORIGINALS], registry)
    # None when none of the first originals to render could be rendered here (gone, too big,
    # rejected): the time is then the typical figure, and said to be, not zero.
    timed_per_megapixel = per_megapixel or pricing.SECONDS_PER_MEGAPIXEL
    population = listing.count
    factor = population / tally.originals if tally.originals else 0.0
    stack = context.stack
    cpus = local.default_jobs()
    jobs = cpus if args.jobs is None else max(0, args.jobs)  # 0: rendered in the command's own process
    memory = int(stack.get("backfillMemoryMb") or pricing.LAMBDA_MEMORY_MB)
    concurrency = int(stack.get("backfillConcurrency") or 10)
    architecture = stack.get("architecture") or "arm64"
    # As the run: invalidated only on a distribution named by --distribution-id or --stack.
    folders = invalidation_prefixes(set(tally.render), set(tally.prune), registry) if context.distribution else []
    work_total = round(tally.work * factor)
    megapixels = tally.megapixels * factor
    estimates = [
        pricing.local_estimate(population, work_total, round(tally.puts * factor), round(tally.prunes * factor),
                               megapixels, round(tally.original_bytes * factor), timed_per_megapixel, jobs, cpus,
                               len(folders)),
        pricing.batch_estimate(population, work_total, work_total, round(tally.puts * factor),
                               round(tally.prunes * factor), megapixels, timed_per_megapixel, memory, architecture,
                               concurrency, len(folders)),
    ]
    result = {
        "dry_run": True, "uploads_bucket": context.uploads, "processed_bucket": context.processed,
        "originals": population, "manifests_read": tally.originals, "sampled": args.sample is not None,
        "planning_seconds": round(planning_seconds, 3),
        "counts": counted(tally, population),
        "render": {name: interval(tally.render[name], tally.originals, population) for name in sorted(tally.render)},
        "prune": {name: interval(tally.prune[name], tally.originals, population) for name in sorted(tally.prune)},
        "kept_undefined": {name: interval(n, tally.originals, population) for name, n in sorted(tally.undefined_kept.items())},
        "megapixels": round(megapixels, 1), "original_bytes": round(tally.original_bytes * factor),
        "seconds_per_megapixel": per_megapixel, "calibrated_on": calibrated_on,
        "assumed_seconds_per_megapixel": None if per_megapixel else pricing.SECONDS_PER_MEGAPIXEL,
        "invalidation_paths": ["/" + f + "*" for f in folders],
        "estimates": {e.engine: {"lines": [line._asdict() for line in e.lines], "total": round(e.total, 6),
                                 "seconds": round(e.seconds, 1)} for e in estimates},
        "unreadable_manifests": [{"key": k, "reason": r} for k, r in tally.errors],
    }
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print("\n".join(describe(result, estimates, jobs, concurrency)))
    return EXIT_OK


def counted(tally: Tally, population: int) -> dict:
    return {name: interval(getattr(tally, name), tally.originals, population)
            for name in ("work", "up_to_date", "failed_earlier", "everything")}


def interval(count: int, sampled: int, population: int):
    """An exact count when every manifest was read; otherwise estimate and 95% bounds."""
    if sampled >= population:
        return count
    estimate = scaled(count, sampled, population)
    return {"estimate": round(estimate.estimate), "low": round(estimate.low), "high": round(estimate.high)}


def measure(store, uploads_bucket: str, planned: list[Planned], registry) -> tuple[float | None, list[str]]:
    """Seconds per megapixel of rendering what these originals (each with variations to render)
    need, on one core of this machine."""
    from pipeline.imaging import RejectedImage, render

    seconds = megapixels = 0.0
    used = []
    for item in planned:
        original = store.get_original(uploads_bucket, item.listed.key, registry.config.max_bytes)
        if original is None or original.body is None:
            continue
        started = time.perf_counter()
        try:
            # One thread: the local engine runs one render per worker process, a function one per vCPU.
            rendering = render(original.body, registry, only=None if item.need.everything else set(item.need.render),
                               threads=1)
        except RejectedImage:
            continue
        seconds += time.perf_counter() - started
        megapixels += rendering.source.width * rendering.source.height / 1e6
        used.append(item.listed.key)
    return (seconds / megapixels if megapixels else None), used


def _n(value) -> str:
    if isinstance(value, dict):
        return f"~{value['estimate']:,} ({value['low']:,}-{value['high']:,}, 95%)"
    return f"{value:,}"


def duration(seconds: float) -> str:
    """An estimate's time as a person reads it; a few images take "under 1 s", not "about 0 s"."""
    if seconds < 1:
        return "under 1 s"
    amount, unit = ((seconds, "s") if seconds < 90 else (seconds / 60, "min") if seconds < 90 * 60
                    else (seconds / 3600, "h"))
    return f"about {math.floor(amount + 0.5):,} {unit}"  # halves up: 150 s and 210 s are 3 and 4 min


def describe(result: dict, estimates, jobs: int, concurrency: int) -> list[str]:
    counts = result["counts"]
    read = f"{result['manifests_read']:,} of {result['originals']:,} manifests read"
    lines = [f"plan for s3://{result['uploads_bucket']} -> s3://{result['processed_bucket']} "
             f"({read} in {result['planning_seconds']:.1f} s){'; a random sample' if result['sampled'] else ''}",
             f"  originals            {result['originals']:>12,}",
             f"  up to date           {_n(counts['up_to_date']):>12}",
             f"  to do                {_n(counts['work']):>12}"]
    if counts["everything"]:
        lines.append(f"    of which in full   {_n(counts['everything']):>12}  (no manifest of their current bytes)")
    if counts["failed_earlier"]:
        lines.append(f"  failed before        {_n(counts['failed_earlier']):>12}  (same limits: left alone; "
                     f"--retry-failed retries)")
    lines.append("  variation            images to render")
    for name, value in result["render"].items():
        lines.append(f"    {name:<18} {_n(value):>12}")
    if not result["render"]:
        lines.append("    (none)")
    for name, value in result["prune"].items():
        lines.append(f"  prune {name:<14} {_n(value):>12}  (no longer defined: files deleted)")
    for name, value in result["kept_undefined"].items():
        lines.append(f"  keep {name:<15} {_n(value):>12}  (no longer defined; --prune deletes)")
    per_mp = result["seconds_per_megapixel"]
    work = f"  work: {result['megapixels']:,.0f} megapixels, {result['original_bytes'] / 1e6:,.1f} MB of originals; "
    if per_mp:
        lines.append(f"{work}measured here: {per_mp * 1000:.1f} ms per megapixel "
                     f"({len(result['calibrated_on'])} originals, one core)")
    elif result["render"]:
        lines.append(f"{work}not measured here (none of the first {CALIBRATION_ORIGINALS} originals to render "
                     f"could be rendered): {result['assumed_seconds_per_megapixel'] * 1000:.0f} ms per megapixel "
                     "assumed")
    if result["unreadable_manifests"]:
        lines.append(f"  {len(result['unreadable_manifests'])} manifests could not be read; first: "
                     f"{result['unreadable_manifests'][0]['key']}: {result['unreadable_manifests'][0]['reason']}")
    lines.append("")
    lines.append("estimated cost (pipeline/backfill/pricing.py: list prices, us-east-1):")
    for estimate in estimates:
        took = duration(estimate.seconds)
        workers = f"with {jobs} workers" if jobs else "in this process"
        when = f"{took} {workers}" if estimate.engine == "local" else f"{took} at {concurrency} concurrent functions"
        lines.append(f"  --engine {estimate.engine}: ${estimate.total:,.4f}, {when}")
        for line in estimate.lines:
            lines.append(f"    {line.what:<46}{line.quantity:>16}  ${line.dollars:,.4f}")
    if result["invalidation_paths"]:
        lines.append("  CDN invalidation after the run: " + " ".join(result["invalidation_paths"]))
    elif result["render"] or result["prune"]:
        lines.append("  no CDN distribution named (--distribution-id or --stack): nothing would be invalidated")
    lines.append("nothing was written")
    return lines
