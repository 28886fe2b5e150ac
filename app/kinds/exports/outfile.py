"""An export's file, wherever storage keeps it (app.core.storage): written in steps,
each checkpointed, made one file (DATA_DIR) or one object (a bucket) once COMPLETED.

The checkpoint is the file's length (`bytes_done`) and, in object storage, the
parts uploaded so far (`options.storage`: upload id, and each part's number,
ETag and size). A run starts by cutting the file back to its checkpoint, so what
a lost run wrote past it is written again exactly once.
"""

import orjson

from app.core import storage
from app.core.storage.local import FileLost, PartFile

__all__ = ["FileLost", "PartFile", "discard_files", "finalize", "open_download", "open_file"]


def state(task) -> dict | None:
    """The storage's part of the export's checkpoint (None on local disk)."""
    return orjson.loads(task.options or "{}").get("storage")


def open_file(config, task):
    """The export's writer, cut back to its checkpoint."""
    return storage.for_config(config).export_file(task.id, state(task), task.bytes_done)


def finalize(config, task) -> None:
    """Make a COMPLETED export's file whole under its final name (idempotent, race-safe:
    the run does it once COMPLETED is committed, a download too if the run died)."""
    storage.for_config(config).finish_export(task.id, state(task))


def discard_files(config, task) -> None:
    """Remove every file of an export: the file or object, parts, copies left by a crash."""
    storage.for_config(config).discard_export(task.id, state(task))


def open_download(config, task) -> storage.Download | None:
    """The finished file of a COMPLETED export, or None if it is missing."""
    finalize(config, task)
    return storage.for_config(config).open_export(task.id)
