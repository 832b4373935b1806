"""What a run did, summed: the progress bar's counts, the summary printed at the end, the JSON
report of failures (key and reason) and the `--json` output are all this one object."""

from __future__ import annotations

import json
import os
import time
from collections import Counter
from dataclasses import dataclass, field

from pipeline.backfill.core import ERROR, FAILED, FAILED_EARLIER, REMOVED, RENDERED, UP_TO_DATE, Result

STATUSES = (RENDERED, UP_TO_DATE, FAILED, ERROR, FAILED_EARLIER, REMOVED)
# Exit statuses of `image-pipeline backfill`.
EXIT_OK, EXIT_FAILURES, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


@dataclass
class Summary:
    engine: str
    uploads_bucket: str
    processed_bucket: str
    scope: dict
    started: float = field(default_factory=time.time)
    finished: float | None = None
    listed: int = 0
    counts: Counter = field(default_factory=Counter)  # status -> originals
    rendered: Counter = field(default_factory=Counter)  # variation -> originals it was rendered for
    pruned: Counter = field(default_factory=Counter)
    requests: Counter = field(default_factory=Counter)  # S3 operation -> requests
    failures: list = field(default_factory=list)  # {"key", "status", "reason"}
    interrupted: bool = False
    invalidated: list = field(default_factory=list)
    job: dict | None = None  # the batch engine's job: id, status, report

    def add(self, result: Result) -> None:
        self.counts[result.status] += 1
        self.rendered.update(result.rendered)
        self.pruned.update(result.pruned)
        self.requests.update(result.requests or {})
        if result.status in (FAILED, ERROR):
            self.failures.append({"key": result.key, "status": result.status, "reason": result.detail})

    @property
    def done(self) -> int:
        return sum(self.counts.values())

    @property
    def failed(self) -> int:
        return self.counts[FAILED] + self.counts[ERROR]

    def exit_status(self) -> int:
        if self.interrupted:
            return EXIT_INTERRUPTED
        return EXIT_FAILURES if self.failed else EXIT_OK

    def as_json(self) -> dict:
        return {
            "engine": self.engine, "uploads_bucket": self.uploads_bucket, "processed_bucket": self.processed_bucket,
            "scope": self.scope, "started": _iso(self.started), "finished": _iso(self.finished),
            "seconds": round((self.finished or time.time()) - self.started, 3),
            "interrupted": self.interrupted, "listed": self.listed, "done": self.done,
            "counts": {status: self.counts[status] for status in STATUSES},
            "rendered": dict(sorted(self.rendered.items())), "pruned": dict(sorted(self.pruned.items())),
            "requests": dict(sorted(self.requests.items())), "invalidated": self.invalidated,
            **({"job": self.job} if self.job else {}),
            "failures": self.failures, "exit_status": self.exit_status(),
        }

    def write(self, path: str) -> str:
        folder = os.path.dirname(path)
        if folder:
            os.makedirs(folder, exist_ok=True)
        temporary = path + ".partial"
        with open(temporary, "w", encoding="utf-8") as file:
            json.dump(self.as_json(), file, indent=2)
            file.write("\n")
        os.replace(temporary, path)
        return path

    def lines(self) -> list[str]:
        """The summary a person reads at the end of a run."""
        seconds = (self.finished or time.time()) - self.started
        rate = self.done / seconds if seconds else 0.0
        head = "interrupted" if self.interrupted else "done"
        out = [f"{head}: {self.done:,} of {self.listed:,} originals in {seconds:.1f} s ({rate:.1f}/s)"]
        for status in STATUSES:
            if self.counts[status]:
                out.append(f"  {status:<15}{self.counts[status]:>9,}")
        for name, count in sorted(self.rendered.items()):
            out.append(f"  rendered {name:<20}{count:>9,}")
        for name, count in sorted(self.pruned.items()):
            out.append(f"  pruned {name:<22}{count:>9,}")
        if self.requests:
            out.append("  S3 requests: " + ", ".join(f"{op} {n:,}" for op, n in sorted(self.requests.items())))
        if self.counts[FAILED_EARLIER]:
            out.append(f"  {self.counts[FAILED_EARLIER]:,} failed before under the same limits and were left alone "
                       f"(--retry-failed retries them)")
        for failure in self.failures[:10]:
            out.append(f"  {failure['status']}: {failure['key']}: {failure['reason']}")
        if len(self.failures) > 10:
            out.append(f"  ... and {len(self.failures) - 10:,} more in the report")
        if self.invalidated:
            out.append("  invalidated on the CDN: " + " ".join(self.invalidated))
        if self.interrupted:
            out.append("  run the same command again to continue: finished originals cost one GET each")
        return out


def _iso(moment: float | None) -> str | None:
    return None if moment is None else time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(moment))


def default_report_path(started: float) -> str:
    return time.strftime("backfill-report-%Y%m%dT%H%M%SZ.json", time.gmtime(started))
