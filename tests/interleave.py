"""Run uploads and the function invocations they trigger in chosen orders, one S3 call at a time.

Every invocation talks to S3 through a `SteppedStore`, which stops before each call of the
storage adapter until the scheduler lets it go on. A schedule is "run the most recently enabled
actor; at these steps, switch to that one instead", so a run is reproducible from a handful of
switches, and `explore` visits every schedule with up to `bound` switches (stateless model
checking with a preemption bound, as CHESS does).

The S3 calls an invocation makes at the same time (`apply_change`'s `calls` executor) are actors
of their own, spawned by `Run.calls`, that run first by default: so the original is read before
the manifest, the order that a concurrent read can take and a sequential one never did, and any
schedule may run other invocations' calls between the two. Waiting for one of them is a step: the
waiting actor is not runnable until it has ended. Switching between the calls of one invocation
is never explored: they touch different objects, so their order among themselves changes nothing.
"""

from __future__ import annotations

import threading
from concurrent.futures import Executor, Future
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
    body: Callable[["Run"], None]  # its store stops at run.checkpoint; its concurrent calls go to run.calls
    after: str | None = None  # the actor that must finish before this one may start
    # False for an actor whose calls commute with every other invocation's (the backup touches only
    # its own bucket): switching to it can never give a new outcome, so no schedule does.
    switch_to: bool = True
    done: bool = False
    error: BaseException | None = None
    pending: str = "start"  # the store call it is stopped before
    go: threading.Semaphore = field(default_factory=lambda: threading.Semaphore(0))
    waiting: Future | None = None  # not runnable until this call, made concurrently, has ended
    spawned: int = 0
    starting: threading.Semaphore | None = None  # released when a spawned call reaches its S3 call


class _SteppedFuture(Future):
    """A concurrent call's result; waiting for it lets the scheduler run other actors meanwhile."""

    def __init__(self, run: "Run"):
        super().__init__()
        self._run = run

    def result(self, timeout=None):
        self._run.wait_for(self)
        return super().result(timeout)

    def exception(self, timeout=None):
        self._run.wait_for(self)
        return super().exception(timeout)


class _SpawningExecutor(Executor):
    def __init__(self, run: "Run"):
        self.run = run

    def submit(self, fn, /, *args, **kwargs) -> Future:
        return self.run.spawn(fn, *args, **kwargs)


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
        self.threads: list[threading.Thread] = []
        self.running: Actor | None = None
        self.spawned_last: Actor | None = None  # runs next by default
        self.naming = threading.Lock()
        self.starting_names: set[str] = set()
        self.calls = _SpawningExecutor(self)

    def spawn(self, fn, *args, **kwargs) -> Future:
        """A call the running actor makes concurrently, as an actor of its own named after it."""
        # From the actor's own thread, or from a thread it started (the rendering threads hand
        # over files to put): only one actor runs at a time, so it is the running one.
        parent = getattr(self.local, "actor", None) or self.running
        # Named by what it does, not by a count: rendering threads hand files over in any order,
        # and a schedule names the actors it switches to.
        what = " ".join([fn.__name__] + [a.key for a in args if hasattr(a, "key")])
        with self.naming:
            name = f"{parent.name}/{what}"
            parent.spawned += 1
            while name in self.actors or name in self.starting_names:
                name += "'"
            self.starting_names.add(name)
        future = _SteppedFuture(self)

        def body(run: "Run") -> None:
            try:
                future.set_result(fn(*args, **kwargs))
            except BaseException as error:  # noqa: BLE001 - handed to whoever waits, as a pool's would be
                future.set_exception(error)

        child = Actor(name, body, switch_to=parent.switch_to)
        # Run it up to its S3 call as part of the running actor's step: its start is no step of its own.
        child.starting = started = threading.Semaphore(0)
        self._start(child)
        child.go.release()
        started.acquire()
        with self.naming:
            self.actors[child.name] = child
            self.order.append(child.name)
            self.starting_names.discard(child.name)
            self.spawned_last = child
        return future

    def wait_for(self, future: Future) -> None:
        actor = getattr(self.local, "actor", None)
        if actor is None or future.done():
            return
        actor.waiting, actor.pending = future, "wait"
        self._park(actor)
        actor.go.acquire()
        actor.waiting = None

    def checkpoint(self, call: str) -> None:
        actor = self.local.actor
        actor.pending = call
        self._park(actor)
        actor.go.acquire()

    def _park(self, actor: Actor) -> None:
        """Hand control back: to the actor that spawned this one if it is starting, else to the scheduler."""
        started, actor.starting = actor.starting, None
        (started or self.parked).release()

    def _body(self, actor: Actor) -> None:
        self.local.actor = actor
        actor.go.acquire()
        try:
            actor.body(self)
        except BaseException as error:  # noqa: BLE001 - reported by the test
            actor.error = error
        finally:
            actor.done = True
            self._park(actor)

    def _runnable(self) -> list[Actor]:
        return [a for a in list(self.actors.values())
                if not a.done and (a.after is None or self.actors[a.after].done)
                and (a.waiting is None or a.waiting.done())]

    def _start(self, actor: Actor) -> None:
        thread = threading.Thread(target=self._body, args=(actor,), daemon=True)
        self.threads.append(thread)
        thread.start()

    def execute(self) -> "Run":
        for actor in list(self.actors.values()):
            self._start(actor)
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
            parent = current and self.actors.get(current.name.split("/")[0])
            if self.spawned_last in runnable:
                default = self.spawned_last
            elif current in runnable:
                default = current
            elif parent in runnable:  # a concurrent call ended: back to the invocation that made it
                default = parent
            else:
                default = max(runnable, key=lambda a: (self.enabled_at[a.name], -self.order.index(a.name)))
            self.spawned_last = None
            chosen = self.actors.get(self.switches.get(step, ""), default)
            if chosen not in runnable:
                chosen = default
            family = default.name.split("/")[0]
            self.trace.append((chosen.name, chosen.pending, [a.name for a in runnable if a is not default
                                                             and a.switch_to and a.name.split("/")[0] != family]))
            self.running = chosen
            chosen.go.release()
            self.parked.acquire()
            current = chosen
            step += 1
        for thread in self.threads:
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
