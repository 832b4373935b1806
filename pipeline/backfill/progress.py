"""The progress bar: done/total, rate, ETA and failures, on stderr (rich, as pip draws its own).

The total grows while the listing is still paging; a run that is not on a terminal draws nothing
until the end, so logs and `--json` output stay clean.
"""

from __future__ import annotations

import sys


class Bar:
    def __init__(self, description: str, *, enabled: bool = True, unit: str = "originals"):
        from rich.console import Console
        from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                                   TimeRemainingColumn)

        self.console = Console(stderr=True)
        self.enabled = enabled and sys.stderr.isatty()
        self.progress = Progress(
            TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
            TextColumn("{task.fields[rate]:>8}/s"), TextColumn("ETA"), TimeRemainingColumn(),
            TextColumn("[red]{task.fields[failed]} failed"), TimeElapsedColumn(),
            console=self.console, disable=not self.enabled, transient=False)
        self.task = self.progress.add_task(description, total=None, rate="-", failed=0)
        self.unit = unit

    def __enter__(self) -> "Bar":
        self.progress.start()
        return self

    def __exit__(self, *exc) -> None:
        self.progress.stop()

    def update(self, *, done: int, total: int | None, failed: int) -> None:
        task = self.progress.tasks[0]
        speed = task.speed
        self.progress.update(self.task, completed=done, total=total, failed=failed,
                             rate=f"{speed:.1f}" if speed else "-")
