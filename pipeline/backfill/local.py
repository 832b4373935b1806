"""The local engine: list the originals, plan them with a thread pool (one GET each), and render
the ones with work in a pool of worker processes on this machine, through boto3 against whatever
S3 endpoint the environment names (AWS, a local stack, a moto server: AWS_ENDPOINT_URL).

Stopping it is safe at any moment: an original's manifest is committed last, so a run started
again finds what is done (one GET each) and does the rest. On Ctrl-C the workers finish the
image they hold (they ignore SIGINT; the parent decides), nothing new starts, and the run ends
with status 130; a second Ctrl-C stops the workers at once.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import threading
from collections import Counter
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import Callable

from pipeline.backfill.core import ERROR, FAILED_EARLIER, UP_TO_DATE, Result, backfill_one
from pipeline.backfill.plan import PLANNING_THREADS, Listing, Planned, bounded, plan_one
from pipeline.backfill.report import Summary
from pipeline.resize import Scope


@dataclass(frozen=True)
class Work:
    uploads_bucket: str
    processed_bucket: str
    config_json: str  # the pipeline configuration: workers build their own registry from it
    scope: Scope


def s3_client():
    """The SDK's standard retries and bounded timeouts, as the functions use; the endpoint and
    region come from the environment (AWS_ENDPOINT_URL, AWS_REGION/AWS_DEFAULT_REGION)."""
    import boto3
    from botocore.config import Config

    return boto3.client("s3", config=Config(retries={"mode": "standard", "total_max_attempts": 4},
                                            connect_timeout=5, read_timeout=60, max_pool_connections=32))


class CountingStore:
    """An S3Store whose client counts its requests by operation, for the report and the bench."""

    def __init__(self, client):
        from pipeline.storage import S3Store

        self.requests: Counter = Counter()
        self._lock = threading.Lock()  # the planner's threads share one client
        client.meta.events.register("before-call.s3", self._count)
        self.store = S3Store(client)

    def _count(self, model=None, **kwargs) -> None:
        with self._lock:
            self.requests[model.name] += 1

    def take(self) -> dict:
        with self._lock:
            taken, self.requests = dict(self.requests), Counter()
        return taken


_worker: tuple | None = None  # (CountingStore, Registry, Work) of this worker process


def make_worker(work: Work) -> tuple:
    from pipeline.config import PipelineConfig
    from pipeline.registry import load_registry

    registry = load_registry(PipelineConfig.from_dict(json.loads(work.config_json)))
    return CountingStore(s3_client()), registry, work


def init_worker(work: Work, workers: int) -> None:
    global _worker
    from pipeline import imaging

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides what an interrupt means
    imaging.share_cpus(workers)  # the workers render at once: each render on its share of the CPUs
    _worker = make_worker(work)


def render_one(planned: Planned, worker: tuple | None = None) -> Result:
    """One original with work, in a worker: never raises (a failure is a result)."""
    counting, registry, work = worker or _worker
    counting.take()
    try:
        result = backfill_one(counting.store, work.uploads_bucket, planned.listed.key, work.processed_bucket,
                              registry, work.scope, decided=(planned.stored, planned.need))
    except Exception as error:  # noqa: BLE001 - one original's trouble never stops the others
        result = Result(planned.listed.key, ERROR, f"{type(error).__name__}: {error}")
    return result._replace(requests=counting.take())


def run(work: Work, listing: Listing, summary: Summary, *, jobs: int,
        on_progress: Callable[[Summary, Listing], None] = lambda summary, listing: None,
        planning_threads: int = PLANNING_THREADS) -> Summary:
    """Run the backfill over `listing`; fills and returns `summary` (interrupted or not)."""
    planner_store, registry, _ = make_worker(work)
    inline = make_worker(work) if jobs == 0 else None  # jobs == 0: render in this process
    workers = None
    if jobs > 0:
        workers = ProcessPoolExecutor(max_workers=jobs, mp_context=multiprocessing.get_context("spawn"),
                                      initializer=init_worker, initargs=(work, jobs))
    working: set[Future] = set()

    def finish(futures) -> None:
        for future in futures:
            summary.add(future.result())
        on_progress(summary, listing)

    def plan(listed) -> Planned:
        return plan_one(planner_store.store, work.processed_bucket, registry, work.scope, listed)

    planners = ThreadPoolExecutor(planning_threads)
    try:
        for listed, future in bounded(planners, plan, listing, planning_threads * 4):
            summary.listed = listing.count
            try:
                planned = future.result()
            except Exception as error:  # noqa: BLE001 - the manifest could not be read: counted, reported
                summary.add(Result(listed.key, ERROR, f"reading the manifest: {type(error).__name__}: {error}"))
                continue
            if not planned.need.work:
                failed = planned.stored.manifest is not None and planned.stored.manifest["status"] == "failed"
                summary.add(Result(listed.key, FAILED_EARLIER if failed else UP_TO_DATE, planned.need.reason))
            elif workers is None:
                summary.add(render_one(planned, inline))
            else:
                working.add(workers.submit(render_one, planned))
                if len(working) >= 2 * jobs:
                    finished, working = wait(working, return_when=FIRST_COMPLETED)
                    finish(finished)
                    continue
            done = {f for f in working if f.done()}
            working -= done
            finish(done)
        summary.listed = listing.count
        while working:
            finished, working = wait(working, return_when=FIRST_COMPLETED)
            finish(finished)
    except KeyboardInterrupt:
        summary.interrupted = True
        planners.shutdown(wait=False, cancel_futures=True)
        if workers is not None:
            try:  # let each worker finish the image it holds; start nothing new
                workers.shutdown(wait=True, cancel_futures=True)
            except KeyboardInterrupt:
                for process in list((getattr(workers, "_processes", None) or {}).values()):
                    process.terminate()
            finish(f for f in working if f.done() and not f.cancelled() and f.exception() is None)
            workers = None
    finally:
        planners.shutdown(wait=not summary.interrupted, cancel_futures=True)
        if workers is not None:
            workers.shutdown(wait=True)
        summary.requests.update(planner_store.take())
        summary.requests.update(inline[0].take() if inline else {})
        summary.requests["ListObjectsV2"] += listing.requests
        summary.listed = listing.count
    return summary


def default_jobs() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
