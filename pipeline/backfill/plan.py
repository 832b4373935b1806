"""What a backfill would do, before any money is spent: list the originals, read their manifests
(all of them with a thread pool, or a random sample), and count per variation what would render.

The same decision (`pipeline.resize.needed`) drives the real run, so the counts of a dry run are
the counts the run then does, as long as nobody uploads meanwhile.
"""

from __future__ import annotations

import math
import random
import time
from collections import Counter
from concurrent.futures import FIRST_COMPLETED, Executor, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Callable, Iterable, Iterator, NamedTuple

from pipeline import keys
from pipeline.backfill.pricing import BYTES_PER_MEGAPIXEL
from pipeline.registry import Registry
from pipeline.resize import Needed, Scope, needed
from pipeline.storage import S3Store, StoredManifest

PLANNING_THREADS = 16  # manifest GETs are latency-bound: many in flight from one process


class Listed(NamedTuple):
    key: str
    etag: str  # of the original's current version, without quotes
    size: int


class Planned(NamedTuple):
    listed: Listed
    stored: StoredManifest
    need: Needed

    @property
    def megapixels(self) -> float:
        source = (self.stored.manifest or {}).get("source", {})
        if source.get("width") and source.get("height"):
            return source["width"] * source["height"] / 1e6
        return self.listed.size / BYTES_PER_MEGAPIXEL


class Listing:
    """The originals under a prefix, page by page (1000 keys a LIST request), at most `limit`."""

    def __init__(self, s3, bucket: str, prefix: str = "", limit: int | None = None):
        self.s3, self.bucket, self.prefix, self.limit = s3, bucket, prefix, limit
        self.requests = 0
        self.count = 0
        self.done = False

    def __iter__(self) -> Iterator[Listed]:
        paginator = self.s3.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=keys.ORIGINAL_PREFIX + self.prefix):
            self.requests += 1
            for obj in page.get("Contents", []):
                if not keys.is_original(obj["Key"]):
                    continue  # a "folder" placeholder
                if self.limit is not None and self.count >= self.limit:
                    self.done = True
                    return
                self.count += 1
                yield Listed(obj["Key"], obj["ETag"].strip('"'), obj["Size"])
        self.done = True


def plan_one(store: S3Store, processed_bucket: str, registry: Registry, scope: Scope, listed: Listed) -> Planned:
    stored = store.read_manifest(processed_bucket, keys.manifest_key(keys.source_path(listed.key)))
    return Planned(listed, stored, needed(stored.manifest, registry, scope, source_etag=listed.etag))


def bounded(executor: Executor, function: Callable, items: Iterable, window: int) -> Iterator[tuple[object, Future]]:
    """(item, finished future) for each item, at most `window` submitted at a time, in the order
    they finish; the items are consumed lazily (a listing of ten million keys is never in memory)."""
    iterator = iter(items)
    pending: dict[Future, object] = {}
    exhausted = False
    while True:
        while not exhausted and len(pending) < window:
            try:
                item = next(iterator)
            except StopIteration:
                exhausted = True
                break
            pending[executor.submit(function, item)] = item
        if not pending:
            return
        finished, _ = wait(pending, return_when=FIRST_COMPLETED)
        for future in finished:
            yield pending.pop(future), future


@dataclass
class Tally:
    """What the planned originals need, summed."""

    originals: int = 0
    up_to_date: int = 0
    failed_earlier: int = 0
    everything: int = 0  # no manifest, another version's, a tombstone, or a failure to retry
    work: int = 0
    render: Counter = field(default_factory=Counter)  # variation -> originals that render it
    prune: Counter = field(default_factory=Counter)
    undefined_kept: Counter = field(default_factory=Counter)  # listed, no longer defined, kept (no --prune)
    megapixels: float = 0.0  # of the originals with variations to render
    original_bytes: int = 0  # of the originals with variations to render: what is downloaded
    files: int = 0  # variation files to put (main files and alternates)
    prunes: int = 0  # originals whose pruned files go in one DeleteObjects
    errors: list = field(default_factory=list)  # (key, reason) of manifests that could not be read

    def add(self, planned: Planned, registry: Registry) -> None:
        self.originals += 1
        need = planned.need
        manifest = planned.stored.manifest
        if manifest is not None and manifest["status"] == "ready":
            self.undefined_kept.update(set(manifest["variations"]) - set(registry.variations) - need.prune)
        if not need.work:
            if manifest is not None and manifest["status"] == "failed":
                self.failed_earlier += 1
            else:
                self.up_to_date += 1
            return
        self.work += 1
        self.everything += need.everything
        self.render.update(need.render)
        self.prune.update(need.prune)
        self.prunes += bool(need.prune)
        if need.render:  # an original with only files to prune is neither rendered nor downloaded (a HEAD)
            self.megapixels += planned.megapixels
            self.original_bytes += planned.listed.size
        self.files += sum(len(registry.renditions(registry.variations[name])) for name in need.render)

    @property
    def puts(self) -> int:
        return self.files + self.work  # and one manifest each


def plan_store(store: S3Store, listing: Listing, processed_bucket: str, registry: Registry, scope: Scope, *,
               sample: int | None = None, threads: int = PLANNING_THREADS, seed: int | None = None,
               on_planned: Callable[[Planned], None] | None = None) -> tuple[Tally, list[Planned]]:
    """Read the manifests of every listed original (or of a uniform random sample of `sample` of
    them, chosen once the listing is complete) and tally what they need. Returns the tally and
    the planned originals that need work."""
    items: Iterable[Listed] = listing
    if sample is not None:
        items = reservoir(listing, sample, random.Random(seed))
    tally, work = Tally(), []
    with ThreadPoolExecutor(threads) as pool:
        for listed, future in bounded(pool, lambda item: plan_one(store, processed_bucket, registry, scope, item),
                                      items, threads * 4):
            try:
                planned = future.result()
            except Exception as error:  # noqa: BLE001 - counted and reported, never stops the plan
                tally.errors.append((listed.key, f"{type(error).__name__}: {error}"))
                continue
            tally.add(planned, registry)
            if planned.need.work:
                work.append(planned)
            if on_planned:
                on_planned(planned)
    return tally, work


def reservoir(items: Iterable, size: int, rng: random.Random) -> list:
    """A uniform random sample of `size` items from an iterable of unknown length (Algorithm R)."""
    chosen: list = []
    for index, item in enumerate(items):
        if index < size:
            chosen.append(item)
        else:
            slot = rng.randrange(index + 1)
            if slot < size:
                chosen[slot] = item
    return chosen


class Interval(NamedTuple):
    estimate: float
    low: float
    high: float


def scaled(count: int, sampled: int, population: int, z: float = 1.96) -> Interval:
    """How many of `population` have a property that `count` of a uniform random sample of
    `sampled` have: the Wilson score interval (95%) for the proportion, narrowed by the finite
    population correction, times the population."""
    if sampled == 0:
        return Interval(0, 0, population)
    if sampled >= population:
        return Interval(count, count, count)
    p = count / sampled
    correction = math.sqrt((population - sampled) / (population - 1))
    denominator = 1 + z * z / sampled
    centre = (p + z * z / (2 * sampled)) / denominator
    half = z * math.sqrt(p * (1 - p) / sampled + z * z / (4 * sampled * sampled)) / denominator * correction
    low, high = max(0.0, centre - half), min(1.0, centre + half)
    return Interval(p * population, low * population, high * population)


def timed(function: Callable, *args, **kwargs):
    started = time.perf_counter()
    return function(*args, **kwargs), time.perf_counter() - started
