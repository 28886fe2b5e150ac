"""What every worker does besides runs: rollbacks, crash recovery, graceful stop.

The worker's main process runs one control thread that claims TERMINATING
tasks nobody holds (so rollbacks never wait behind imports for a pool slot)
and, every few seconds, sweeps: tasks whose holder went silent are handed
back, queued tasks nobody took are rung again, upload files nothing will use (a
web process killed mid-upload) and incomplete multipart uploads no task holds are
removed, from DATA_DIR or the bucket (app.core.storage), and each kind sweeps its
own (an export's file past EXPORT_TTL_HOURS). SIGTERM (to the worker or to
a pool child) makes every run stop at its next checkpoint and hand its task back.
"""

import logging
import os
import signal
import threading
import time

import orjson
from celery import signals
from celery.worker.control import control_command
from sqlalchemy import or_, select

from app.core import broker, runner, storage
from app.core import states as S
from app.core.dispatch import enqueue
from app.core.models import Task, db
from app.logs import task_context

log = logging.getLogger(__name__)

# The control thread looks for rollbacks every CONTROL_POLL_S, and at once when
# woken: a terminate accepted by the web broadcasts `wake_control`.
_wake = threading.Event()


@control_command()
def wake_control(state) -> dict:
    """Remote control command: the control thread looks for work now."""
    _wake.set()
    return {"ok": "woken"}


def uploads_needed(engine, names: list[str]) -> set[str]:
    """Those of the upload file names that a task still needs (it may run again,
    or its rows stay until it is terminated); matched by name, not by folder."""
    T = Task.__table__
    done = (S.COMPLETED, S.REVOKED)
    needed = set()
    with engine.connect() as conn:
        for i in range(0, len(names), 200):
            batch = names[i : i + 200]
            rows = conn.execute(
                select(T.c.upload_path).where(
                    T.c.status.not_in(done),
                    or_(*[T.c.upload_path.endswith("/" + name) for name in batch]),
                )
            ).scalars()
            needed.update(os.path.basename(p) for p in rows)
    return needed


def export_holds(engine, task_id: int, upload_id: str) -> bool:
    """True if the export may still use that multipart upload: a run holds the task
    (it may have begun the upload and not yet checkpointed it), or the checkpoint
    lists it and the task is not REVOKED (a COMPLETED one may still complete it)."""
    T = Task.__table__
    with engine.connect() as conn:
        row = conn.execute(select(T.c.status, T.c.options).where(T.c.id == task_id)).first()
    if row is None or row.status == S.REVOKED:
        return False
    if row.status in (S.PROCESSING, S.PAUSING):
        return True
    state = orjson.loads(row.options or "{}").get("storage") or {}
    return state.get("upload_id") == upload_id


def remove_orphan_uploads(app, store) -> None:
    max_age = app.config["UPLOAD_PART_MAX_AGE_S"]
    for what in storage.for_config(app.config).remove_orphans(
        max_age,
        lambda names: uploads_needed(store.engine, names),
        lambda task_id, upload_id: export_holds(store.engine, task_id, upload_id),
    ):
        log.info("removed orphan upload %s", what)


def control_loop(app, stop: threading.Event) -> None:
    """Rollbacks and sweeps until `stop` is set."""
    store = app.extensions["store"]
    interval = app.config["SWEEP_INTERVAL_S"]
    timeout = app.config["HEARTBEAT_TIMEOUT_S"]
    poll = app.config["CONTROL_POLL_S"]
    next_sweep = 0.0
    with app.app_context():
        while not stop.is_set():
            try:
                for task_id in store.unheld_terminations():
                    with task_context(task_id):
                        runner.rollback(store, task_id, app.config)
                store.wal_checkpoint()
                now = time.monotonic()
                if now >= next_sweep:
                    next_sweep = now + interval
                    for task_id in store.sweep(timeout):
                        with task_context(task_id):
                            log.info("sweeper: ringing task %s again", task_id)
                            enqueue(task_id)
                    remove_orphan_uploads(app, store)
                    for job in runner.KINDS.values():
                        job.sweep(store, app.config)
            except Exception:
                log.exception("control loop error; retrying")
                stop.wait(1.0)
            _wake.wait(poll)
            _wake.clear()


def _on_child_sigterm(_signum, _frame) -> None:
    runner.shutdown.set()


def install(app) -> None:
    """Connect the worker signals; call once in the worker's main module."""
    stop = threading.Event()
    runner.shutdown.share()

    @signals.worker_process_init.connect(weak=False)
    def _child_init(**_):
        with app.app_context():
            db.engine.dispose(close=False)  # no connection shared across fork

    @signals.task_prerun.connect(weak=False)
    def _before_task(**_):
        # billiard resets SIGTERM in each pool child after its initializer runs:
        # set ours here, so SIGTERM means "stop at the next checkpoint".
        if signal.getsignal(signal.SIGTERM) is not _on_child_sigterm:
            signal.signal(signal.SIGTERM, _on_child_sigterm)

    @signals.worker_ready.connect(weak=False)
    def _ready(**_):
        threading.Thread(target=control_loop, args=(app, stop), name="control", daemon=True).start()

    @signals.worker_shutting_down.connect(weak=False)
    def _shutting_down(**_):
        # Seen by every pool child at its next checkpoint (no signal to children:
        # an idle child killed while holding the pool's queue lock hangs the exit).
        stop.set()
        _wake.set()
        runner.shutdown.set()
        broker.stopping.set()

    @signals.worker_shutdown.connect(weak=False)
    def _shut_down(sender=None, **_):
        # Everything is stopped by now: the pool joined (runs at a checkpoint),
        # the consumer closed (acks flushed, unacked messages restored). What is
        # left is billiard's atexit pool finalizer and the interpreter's final
        # collection, about 2.5 s of waiting on nothing: skip them.
        logging.shutdown()
        os._exit(getattr(sender, "exitcode", 0) or 0)
