"""The lifecycle of a run, written once for every kind of task.

A kind (imports, exports) is a class registered in KINDS that turns a claimed
task into a stream of `Step`s and knows which rows and files are its own. The
runner claims, commits each step fenced by the run token, obeys pause and
terminate at every checkpoint, stops at a checkpoint on shutdown, and rolls back.
"""

import logging
import threading
import time
from collections.abc import Callable, Iterator
from multiprocessing.sharedctypes import RawValue

from sqlalchemy.exc import OperationalError

from app import metrics
from app.core import states as S
from app.core.states import Outcome
from app.core.store import Step, Store
from app.logs import annotate

log = logging.getLogger(__name__)

KINDS: dict[str, type["Job"]] = {}


class ShutdownFlag:
    """ "Stop at the next checkpoint": set by SIGTERM in this process, or by the
    worker's main process through shared memory that its pool children inherit."""

    def __init__(self):
        self._local = threading.Event()
        self._shared = None

    def share(self) -> None:
        """Call in the parent before it forks its pool."""
        self._shared = RawValue("b", 0)

    def set(self) -> None:
        self._local.set()
        if self._shared is not None:
            self._shared.value = 1

    def is_set(self) -> bool:
        return self._local.is_set() or bool(self._shared is not None and self._shared.value)

    def wait(self, timeout: float) -> bool:
        """Sleep up to `timeout` seconds, waking early once the flag is set."""
        deadline = time.monotonic() + timeout
        while not self.is_set():
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            self._local.wait(min(left, 0.05))
        return True


shutdown = ShutdownFlag()

RETRIES = 5

# A step with no rows and no checkpoint: committing it obeys a pause (PAUSED at the
# checkpoint already committed) or a terminate (LOST), or is a heartbeat.
OBEY = Step(checkpoint={})


class Job:
    """Base class of a kind of task: what it reads, writes, reports and undoes.

    The runner never branches on kind; a kind subclasses this in its package
    (app/kinds/<name>/) and is listed once in app/kinds/__init__.py.
    """

    kind = ""
    row_tables: tuple = ()  # tables keyed by (task_id, row_number), deleted on rollback
    task_fields: dict = {}  # marshmallow fields this kind adds to the task JSON

    def __init__(self, store: Store, task, config: dict):
        self.store, self.task, self.config = store, task, config

    def steps(self) -> Iterator[Step | None]:
        """The run's steps from the task's checkpoint; None: nothing to commit yet
        (the runner looks at the task's status meanwhile)."""
        raise NotImplementedError

    def finished(self, outcome: Outcome) -> None:
        """Called once the run stopped with `outcome`."""

    @classmethod
    def undo(cls, store: Store, task, token: str, config: dict) -> bool:
        """Remove what the task wrote (rollback); False if the run token was lost."""
        return store.delete_rows(task.id, token, task.last_row, cls.row_tables)

    @classmethod
    def discard(cls, task, config: dict) -> None:
        """Remove the task's files (on rollback)."""

    @classmethod
    def present(cls, task, shown: dict, config: dict) -> dict:
        """The task as the API shows it: adjust the generic fields, add the kind's own."""
        return shown

    @classmethod
    def sweep(cls, store: Store, config: dict) -> None:
        """Housekeeping of this kind, at every sweep of every worker's control thread."""


def register(job: type[Job]) -> type[Job]:
    KINDS[job.kind] = job
    return job


# While a run waits (for its reader's next batch, or in the throttle's sleep) it
# looks at its task's status this often: a pause or terminate requested meanwhile
# is obeyed within this, not at the end of the wait.
WATCH_S = 0.01


class Throttle:
    """Keeps a run under `rate` rows per second, waking early on shutdown."""

    def __init__(self, rate: float | None):
        self.rate, self.start, self.done = rate, time.monotonic(), 0

    def wait(self, rows: int, interrupt: Callable[[], bool] = lambda: False) -> bool:
        """Sleep off `rows`; True if `interrupt()` (asked every WATCH_S) cut it short."""
        if not self.rate:
            return False
        now = time.monotonic()
        # No credit for time spent without rows (a slow start, a counting pass).
        self.start = max(self.start, now - self.done / self.rate - 0.05)
        self.done += rows
        until = self.start + self.done / self.rate
        while (left := until - time.monotonic()) > 0:
            if shutdown.wait(min(left, WATCH_S)):
                return False
            if interrupt():
                return True
        return False


class Watch:
    """Whether the task left PROCESSING (a pause or terminate was requested), read
    from the database at most every WATCH_S: a plain read, no lock taken."""

    def __init__(self, store: Store, task_id: int):
        self.store, self.task_id, self.next = store, task_id, 0.0

    def __call__(self) -> bool:
        now = time.monotonic()
        if now < self.next:
            return False
        self.next = now + WATCH_S
        try:
            return self.store.status(self.task_id) != S.PROCESSING
        except OperationalError:  # a dropped link: ask again later; commits retry
            log.warning("task %s: could not read its status", self.task_id, exc_info=True)
            return False


def _commit(store: Store, task_id: int, token: str, step: Step) -> Outcome:
    """Commit a step, retrying transient database errors (locks, dropped links)."""
    for attempt in range(RETRIES):
        try:
            return store.commit(task_id, token, step)
        except OperationalError:
            if attempt == RETRIES - 1:
                raise
            log.warning("task %s: transient database error, retrying", task_id, exc_info=True)
            time.sleep(0.2 * 2**attempt)
            # A link lost during COMMIT leaves it unknown whether the batch landed.
            landed = _landed(store, task_id, step)
            if landed is not None:
                return landed
    raise AssertionError("unreachable")


def _landed(store: Store, task_id: int, step: Step) -> Outcome | None:
    """The outcome of a commit that did land after all, or None if it did not."""
    try:
        task = store.get(task_id)
    except OperationalError:
        return None
    if task.status == S.PAUSED:
        return Outcome.PAUSED  # paused at this batch, or just before it (store.commit)
    if any(getattr(task, k) != v for k, v in step.checkpoint.items()):
        return None
    if step.done and task.status not in (S.PAUSED, S.COMPLETED, S.FAILED):
        return None  # an empty last step leaves the checkpoint as it was: not proof
    stopped = {S.PAUSED: Outcome.PAUSED, S.COMPLETED: Outcome.COMPLETED, S.FAILED: Outcome.FAILED}
    return stopped.get(task.status, Outcome.CONTINUE)


def run(store: Store, task_id: int, config: dict, enqueue: Callable[[int], None]) -> Outcome:
    """Run a task from its checkpoint until it completes, pauses, fails or is lost."""
    claimed = store.claim(task_id)
    if claimed is None:
        return Outcome.NOT_CLAIMED  # a duplicate or stale message: another run holds it
    token, task = claimed
    annotate(task.kind, token)  # log lines from here on name the kind and the run
    job = KINDS[task.kind](store, task, config)
    throttle = Throttle(config.get("IMPORT_MAX_ROWS_PER_S"))
    log_batches = config.get("IMPORT_BATCH_LOG")
    outcome = Outcome.LOST
    steps = job.steps()
    asked = Watch(store, task_id)
    try:
        for step in steps:
            if step is None:  # nothing to commit yet (the reader is starting, or parsing)
                if not asked():
                    continue
                step = OBEY
            started = time.perf_counter()
            outcome = _commit(store, task_id, token, step)
            metrics.BATCH_COMMIT.observe(time.perf_counter() - started)
            if log_batches:
                ms = (time.perf_counter() - started) * 1000
                log.info("batch task=%s rows=%d ms=%.2f", task_id, step.rows, ms)
            if outcome != Outcome.CONTINUE:
                break
            if shutdown.is_set():
                outcome = Outcome.RELEASED
                if store.release(task_id, token):
                    enqueue(task_id)
                break
            if throttle.wait(step.rows + step.errors, asked):
                outcome = _commit(store, task_id, token, OBEY)
                if outcome != Outcome.CONTINUE:
                    break
    except Exception as exc:
        if store.fail(task_id, token, f"{type(exc).__name__}: {exc}"):
            log.exception("task %s failed", task_id)
            outcome = Outcome.FAILED
        else:  # terminated or taken over meanwhile (its upload may be gone): not a failure
            log.info("task %s stopped: no longer held (%s)", task_id, exc)
    finally:
        steps.close()  # stops the reader (a child process for imports)
    job.finished(outcome)
    if outcome == Outcome.PAUSED:
        metrics.action_reached(store, task_id, "pause")
    if outcome == Outcome.LOST:
        rollback(store, task_id, config)  # if it was terminated, this worker is free to undo it
    return outcome


def rollback(store: Store, task_id: int, config: dict) -> bool:
    """Undo a TERMINATING task nobody holds: its kind's undo and files, then REVOKED."""
    claimed = store.claim_rollback(task_id)
    if claimed is None:
        return False
    token, task = claimed
    annotate(task.kind, token)
    job = KINDS[task.kind]
    if not job.undo(store, task, token, config):
        return False
    job.discard(task, config)
    if not store.finish_rollback(task_id, token):
        return False
    metrics.action_reached(store, task_id, "terminate")
    return True
