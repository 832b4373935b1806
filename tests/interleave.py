"""Run uploads and the function invocations they trigger in chosen orders, one S3 call at a time.

Every invocation talks to S3 through a `SteppedStore`, which stops before each call of the
storage adapter until the scheduler lets it go on. A schedule is "run the most recently enabled
actor; at these steps, switch to that one instead", so a run is reproducible from a handful of
switches, and `explore` visits every schedule with up to `bound` switches (stateless model
checking with a preemption bound, as CHESS does).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Callable

from pipeline.storage import S3Store

STORE_CALLS = ("get_original", "head_original", "file_sources", "read_manifest", "put", "put_manifest", "delete",
               "backed_up_versions", "copy_version")


class SteppedStore(S3Store):
    """The real S3 adapter, stopping at a checkpoint before each of its calls."""

    def __init__(self, client, checkpoint: Callable[[str], None]):
        super().__init__(client)
        self._checkpoint = checkpoint


def _stepped(name: str):
    def call(self, *args, **kwargs):
        self._checkpoint(name)
        return getattr(S3Store, name)(self, *args, **kwargs)

    return call


for _name in STORE_CALLS:
    setattr(SteppedStore, _name, _stepped(_name))


@dataclass
class Actor:
    name: str
    body: Callable[[Callable[[str], None]], None]  # called with the checkpoint its store must use
    after: str | None = None  # the actor that must finish before this one may start
    # False for an actor whose calls commute with every other invocation's (the backup touches only
    # its own bucket): switching to it can never give a new outcome, so no schedule does.
    switch_to: bool = True
    done: bool = False
    error: BaseException | None = None
    pending: str = "start"  # the store call it is stopped before
    go: threading.Semaphore = field(default_factory=lambda: threading.Semaphore(0))


class Run:
    """One execution of a set of actors under a schedule of switches {step: actor name}."""

    def __init__(self, actors: list[Actor], switches: dict[int, str]):
        self.actors = {a.name: a for a in actors}
        self.order = [a.name for a in actors]
        self.switches = switches
        self.parked = threading.Semaphore(0)
        self.local = threading.local()
        self.trace: list[tuple[str, str, list[str]]] = []  # (actor, call, runnable alternatives)
        self.enabled_at: dict[str, int] = {}  # the step at which each actor became runnable

    def checkpoint(self, call: str) -> None:
        actor = self.local.actor
        actor.pending = call
        self.parked.release()
        actor.go.acquire()

    def _body(self, actor: Actor) -> None:
        self.local.actor = actor
        actor.go.acquire()
        try:
            actor.body(self.checkpoint)
        except BaseException as error:  # noqa: BLE001 - reported by the test
            actor.error = error
        finally:
            actor.done = True
            self.parked.release()

    def _runnable(self) -> list[Actor]:
        return [a for a in self.actors.values()
                if not a.done and (a.after is None or self.actors[a.after].done)]

    def execute(self) -> "Run":
        threads = [threading.Thread(target=self._body, args=(a,), daemon=True) for a in self.actors.values()]
        for thread in threads:
            thread.start()
        current: Actor | None = None
        step = 0
        while True:
            runnable = self._runnable()
            if not runnable:
                break
            for actor in runnable:
                self.enabled_at.setdefault(actor.name, step)
            # Default: go on with the running actor; else the one enabled last (earliest listed on a
            # tie), so an upload's invocations run before the next upload unless a switch says otherwise.
            default = current if current in runnable else max(
                runnable, key=lambda a: (self.enabled_at[a.name], -self.order.index(a.name)))
            chosen = self.actors.get(self.switches.get(step, ""), default)
            if chosen not in runnable:
                chosen = default
            self.trace.append((chosen.name, chosen.pending,
                               [a.name for a in runnable if a is not default and a.switch_to]))
            chosen.go.release()
            self.parked.acquire()
            current = chosen
            step += 1
        for thread in threads:
            thread.join(timeout=30)
        return self


def explore(make_actors: Callable[[int], list[Actor]], check: Callable[[int, Run], None], bound: int) -> int:
    """Run every schedule with at most `bound` switches away from the default; check each. Returns the count."""
    runs = 0

    def visit(switches: dict[int, str], from_step: int, left: int) -> None:
        nonlocal runs
        run = Run(make_actors(runs), switches).execute()
        check(runs, run)
        runs += 1
        if left == 0:
            return
        for step in range(from_step, len(run.trace)):
            for alternative in run.trace[step][2]:
                visit({**switches, step: alternative}, step + 1, left - 1)

    visit({}, 0, bound)
    return runs
