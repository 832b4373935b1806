"""What happened to one record: the value a handler reports for it."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Outcome:
    key: str
    # "processed", "failed" (permanent), "skipped" (already done), "superseded" (a later event was
    # applied first), "gone" (nothing left to copy), "removed"
    outcome: str
    reason: str | None = None
    bytes_written: int = 0
