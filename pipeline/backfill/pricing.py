"""The prices a backfill's estimate is made from, in one table, and the arithmetic.

US East (N. Virginia) list prices in US dollars, as AWS publishes them on its pricing pages for
Lambda, S3 (requests, Batch Operations, data transfer) and CloudFront; other regions differ by
a few percent. They were copied by hand, not fetched: check them against the pages before you
quote an estimate, and edit this table (and only it) when they change.
"""

from __future__ import annotations

from typing import NamedTuple

PRICES = {
    # Lambda: duration per GB-second by architecture, and each invocation.
    "lambda_gb_second_arm64": 0.0000133334,
    "lambda_gb_second_x86_64": 0.0000166667,
    "lambda_request": 0.20 / 1_000_000,
    # S3 Standard requests. DELETE is free; DeleteObjects is one request for up to 1000 keys.
    "s3_put": 0.005 / 1_000,  # PUT, COPY, POST, LIST
    "s3_list": 0.005 / 1_000,
    "s3_get": 0.0004 / 1_000,
    # S3 Batch Operations: per job, and per object operation performed (a task).
    "batch_job": 0.25,
    "batch_task": 1.00 / 1_000_000,
    # Data transfer out of S3 to the internet (the first 10 TB of a month; the first 100 GB are
    # free); zero when the local engine runs on EC2 in the bucket's region.
    "transfer_out_gb": 0.09,
    # CloudFront: invalidation paths past the first 1,000 of a month; a wildcard counts as one.
    "invalidation_path": 0.005,
}

# What the estimate assumes where it cannot measure. The backfill function's duration is
# rendering (measured on this machine, per megapixel) plus its S3 round trips: two GETs and two
# PUTs at tens of milliseconds each in-region, plus reading a phone photo at ~90 MB/s.
LAMBDA_IO_SECONDS = 0.15
# A JPEG from a phone camera holds about 0.25 MB per megapixel (12 MP: ~3 MB). Used only for an
# original whose manifest does not record its size in pixels.
BYTES_PER_MEGAPIXEL = 250_000
# Where the batch engine has not measured (it plans no render): a 12 MP phone photo, and this
# time per megapixel of rendering one variation of it on one core (benchmarks/backfill.py).
TYPICAL_MEGAPIXELS = 12.0
SECONDS_PER_MEGAPIXEL = 0.02
# The local engine's worker processes start (a Python and the imaging code) before the first
# image: 0.4-0.7 s each here (imports, the registry, an S3 client), several at once on shared cores.
WORKER_START_SECONDS = 1.0
# Lambda bills duration in 1 ms steps; a 1769 MB function has one full vCPU, like the one core
# this machine's time per megapixel is measured on (arm64 Graviton and this CPU differ: the
# figure is an estimate, not a quote).
LAMBDA_MEMORY_MB = 1769


class Line(NamedTuple):
    what: str
    quantity: str
    dollars: float


class Estimate(NamedTuple):
    engine: str
    lines: list[Line]
    seconds: float  # wall-clock time the run would take

    @property
    def total(self) -> float:
        return sum(line.dollars for line in self.lines)


def s3_lines(originals: int, work: int, puts: int, deletes: int) -> list[Line]:
    """Requests both engines make: LIST the originals, GET each manifest, GET each original that
    has work (a HEAD, priced as a GET, when it only has files to prune), PUT the variation files
    and manifests (DeleteObjects for pruned files)."""
    lists = -(-originals // 1000)
    gets = originals + work
    return [Line("S3 LIST (the originals)", f"{lists:,}", lists * PRICES["s3_list"]),
            Line("S3 GET (manifests, originals)", f"{gets:,}", gets * PRICES["s3_get"]),
            Line("S3 PUT (variations, manifests)", f"{puts + deletes:,}", (puts + deletes) * PRICES["s3_put"])]


def local_estimate(originals: int, work: int, puts: int, deletes: int, megapixels: float, original_bytes: int,
                   seconds_per_megapixel: float, jobs: int, cpus: int, invalidations: int) -> Estimate:
    """`jobs` worker processes (0: the command's own process) on `cpus` cores; the time per
    megapixel is one core's."""
    transfer = original_bytes / 1e9
    lines = s3_lines(originals, work, puts, deletes) + [
        Line("data transfer out (originals to this machine)", f"{transfer:,.2f} GB", transfer * PRICES["transfer_out_gb"]),
        Line("CloudFront invalidation paths", f"{invalidations}", invalidations * PRICES["invalidation_path"]),
    ]
    # Rendering goes no faster than the cores (with no workers, the command's own process renders
    # on all of them); each original with work also waits for its S3 requests, as the function's
    # do (from outside AWS they take longer), one at a time a worker: the time is a floor.
    rendering = megapixels * seconds_per_megapixel / max(1, min(jobs or cpus, cpus))
    waiting = work * LAMBDA_IO_SECONDS / max(1, jobs)
    return Estimate("local", lines, rendering + waiting + (WORKER_START_SECONDS if work and jobs else 0.0))


def batch_estimate(originals: int, tasks: int, work: int, puts: int, deletes: int, megapixels: float,
                   seconds_per_megapixel: float, memory_mb: int, architecture: str, concurrency: int,
                   invalidations: int) -> Estimate:
    """`tasks` originals go into the job (those planned to need work, or every one listed when
    the job's manifest is generated by S3); `work` of them render."""
    function_seconds = megapixels * seconds_per_megapixel + tasks * LAMBDA_IO_SECONDS
    gb_seconds = function_seconds * memory_mb / 1024
    jobs = 1 if tasks else 0  # with nothing to do, no job is created
    lines = s3_lines(originals, work, puts, deletes) + [
        Line(f"Lambda duration ({memory_mb} MB, {architecture})", f"{gb_seconds:,.0f} GB-s",
             gb_seconds * PRICES[f"lambda_gb_second_{architecture}"]),
        Line("Lambda requests", f"{tasks:,}", tasks * PRICES["lambda_request"]),
        Line("Batch Operations job", f"{jobs}", jobs * PRICES["batch_job"]),
        Line("Batch Operations tasks", f"{tasks:,}", tasks * PRICES["batch_task"]),
        Line("CloudFront invalidation paths", f"{invalidations}", invalidations * PRICES["invalidation_path"]),
    ]
    return Estimate("batch", lines, function_seconds / max(1, concurrency))
