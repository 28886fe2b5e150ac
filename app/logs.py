"""Logging for every process: text, or one JSON object per line (LOG_FORMAT=json).

While a worker handles a task, every line it logs names the task: `task_id`,
`kind` and `run` (the first 8 characters of the run token), as fields in JSON
and as a `[task 12 import run 3f2a9c1e]` prefix in text. The context is a
contextvar, set where a task is picked up (dispatch, the control thread) and
completed by the runner once it has claimed the task.

JSON comes from python-json-logger (maintained, handles exceptions, extra fields
and values json cannot encode) rather than a hand-made Formatter.
"""

import contextvars
import logging
from contextlib import contextmanager

from pythonjsonlogger.json import JsonFormatter

from app import config

_task: contextvars.ContextVar[dict | None] = contextvars.ContextVar("task", default=None)
FIELDS = ("task_id", "kind", "run")
TEXT = "[%(asctime)s: %(levelname)s/%(processName)s] %(task)s%(message)s"
JSON = ["asctime", "levelname", "name", "processName", "message"]


@contextmanager
def task_context(task_id: int, kind: str | None = None, token: str | None = None):
    """Log lines inside name this task (and its kind and run once known)."""
    reset = _task.set({"task_id": task_id, "kind": kind, "run": token and token[:8]})
    try:
        yield
    finally:
        _task.reset(reset)


def annotate(kind: str, token: str | None) -> None:
    """Complete the current task context once the task is claimed."""
    ctx = _task.get()
    if ctx is not None:
        ctx.update(kind=kind, run=token and token[:8])


class TaskFilter(logging.Filter):
    """Adds the task context to each record (None outside a task)."""

    def filter(self, record: logging.LogRecord) -> bool:
        ctx = _task.get() or {}
        for field in FIELDS:
            if not hasattr(record, field):
                setattr(record, field, ctx.get(field))
        if record.task_id is None:
            record.task = ""
        else:
            record.task = f"[task {record.task_id} {record.kind or '?'} run {record.run or '-'}] "
        return True


class TaskJsonFormatter(JsonFormatter):
    """JSON with the task fields only when there is a task."""

    def add_fields(self, log_record, record, message_dict) -> None:
        super().add_fields(log_record, record, message_dict)
        for field in ("task", *FIELDS):  # the filter's attributes, extras to the library
            log_record.pop(field, None)
        if getattr(record, "task_id", None) is not None:
            for field in FIELDS:
                log_record[field] = getattr(record, field)


def formatter(fmt: str | None = None) -> logging.Formatter:
    """The formatter LOG_FORMAT asks for."""
    fmt = fmt or config.log_settings()[0]
    if fmt.strip().lower() == "json":
        return TaskJsonFormatter(
            JSON,
            rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
            json_ensure_ascii=False,
        )
    return logging.Formatter(TEXT)


def configure_logging(process: str | None = None) -> None:
    """One stderr handler on the root logger, with the task filter and LOG_FORMAT."""
    if process:
        import multiprocessing

        multiprocessing.current_process().name = process
    handler = logging.StreamHandler()
    handler.addFilter(TaskFilter())
    handler.setFormatter(formatter())
    root = logging.getLogger()
    root.handlers = [handler]
    root.setLevel(config.log_settings()[1])
