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
    rendered: tuple[str, ...] = ()  # the variations whose files were put, in registry order
    pruned: tuple[str, ...] = ()  # variations no longer defined whose files were deleted
    rounds: int = 0  # commits tried: more than one means another writer committed first
