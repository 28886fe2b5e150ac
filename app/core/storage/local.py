"""Uploads and exports as files under DATA_DIR (the default: `make run` needs nothing else).

Uploads stream to `uploads/<uuid>.part`, locked (flock) by the request writing
them, renamed `<uuid>.csv` when complete. Exports are written as
`exports/<id>.csv.part`, locked by the run writing them, renamed `<id>.csv` once
COMPLETED.
"""

import fcntl
import glob
import io
import logging
import os
import time
import uuid
from collections.abc import Callable

from app.core.storage.base import SNIFF_BYTES, Download, Storage

log = logging.getLogger(__name__)

UPLOADS, EXPORTS, PART = "uploads", "exports", ".part"


class FileRange(io.BufferedReader):
    """A local file read from a byte offset; `pread` reads bytes already passed."""

    def __init__(self, path: str, offset: int = 0):
        super().__init__(io.FileIO(path, "rb"))
        if offset:
            self.seek(offset)

    def pread(self, size: int, pos: int) -> bytes:
        return os.pread(self.fileno(), size, pos)


def unlink(path: str) -> bool:
    try:
        os.unlink(path)
        return True
    except FileNotFoundError:
        return False


class LocalUpload:
    """An upload being written to its locked .part file; commit renames it .csv."""

    def __init__(self, folder: str):
        self.path = os.path.join(folder, f"{uuid.uuid4().hex}{PART}")
        self.f = open(self.path, "w+b")  # noqa: SIM115  (closed by commit or abort)
        # Held while this request lives (released by the kernel if the process dies).
        fcntl.flock(self.f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        self.head = b""

    def write(self, data) -> int:
        if len(self.head) <= SNIFF_BYTES:
            self.head += bytes(data[: SNIFF_BYTES + 1 - len(self.head)])
        return self.f.write(data)

    def seek(self, pos: int, whence: int = 0) -> int:
        return self.f.seek(pos, whence)

    def tell(self) -> int:
        return self.f.tell()

    def flush(self) -> None:
        self.f.flush()

    def commit(self) -> tuple[str, int]:
        """Close the file and give it its final name; return (location, size).

        An OSError (no room for the last buffered bytes) leaves nothing behind.
        """
        try:
            self.f.flush()
            size = os.fstat(self.f.fileno()).st_size
            self.f.close()
        except OSError:
            self.abort()
            raise
        final = self.path[: -len(PART)] + ".csv"
        os.replace(self.path, final)
        return final, size

    def abort(self) -> None:
        """Remove the part (errors, aborted requests); safe to call twice."""
        if self.f.closed and not os.path.exists(self.path):
            return
        unlink(self.path)
        try:
            self.f.close()  # flushes first: on a full disk that fails, and closes anyway
        except OSError:
            pass


class PartFile:
    """The .part file of a running export, locked, cut back to its checkpoint.

    A run that finds it locked was handed the task while its predecessor is still
    alive (stalled past the heartbeat timeout): it goes on in a fresh copy of the
    committed bytes, so the stale run, whose commits are fenced off anyway, writes
    only into a file nobody will read again.
    """

    def __init__(self, path: str, offset: int):
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fd = _take_over(path, fd, offset)
        size = os.fstat(fd).st_size
        if size < offset:
            os.close(fd)
            raise FileLost(f"{path} holds {size} bytes, its checkpoint {offset}")
        os.ftruncate(fd, offset)  # what a lost run wrote past the checkpoint goes
        self.f = open(fd, "r+b")  # noqa: SIM115  (closed by close())
        self.f.seek(offset)

    def write(self, data: bytes) -> None:
        self.f.write(data)

    def sync(self, mark: dict, done: bool = False) -> dict:
        """Make what was written durable; return the checkpoint to commit with it."""
        self.f.flush()
        os.fdatasync(self.f.fileno())
        return {**mark, "bytes_done": self.f.tell()}

    def cut(self, offset: int) -> None:
        """Drop what was written past `offset` (a batch whose checkpoint was not committed)."""
        self.f.flush()
        if self.f.tell() > offset:
            self.f.truncate(offset)
            self.f.seek(offset)

    def abandon(self, committed: dict | None) -> None:
        """Nothing to do: a file has no upload of its own to give up."""

    def close(self) -> None:
        if not self.f.closed:
            self.f.close()  # releases the lock


class FileLost(Exception):
    """The file is shorter than its checkpoint says (removed or cut by hand)."""


def _take_over(path: str, old: int, offset: int) -> int:
    """Copy the first `offset` bytes into a new locked file that replaces `path`."""
    log.warning("%s is held by a stale run: going on in a copy of its checkpoint", path)
    tmp = f"{path}.{uuid.uuid4().hex}.tmp"
    fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    copied = 0
    while copied < offset:
        block = os.pread(old, min(offset - copied, 1 << 20), copied)
        if not block:
            break  # shorter than the checkpoint: the caller reports it
        view = memoryview(block)
        while view:
            view = view[os.write(fd, view) :]
        copied += len(block)
    os.fsync(fd)
    os.replace(tmp, path)
    os.close(old)
    return fd


class LocalStorage(Storage):
    def __init__(self, data_dir: str):
        self.data_dir = data_dir
        self.uploads = os.path.join(data_dir, UPLOADS)

    def new_upload(self) -> LocalUpload:
        return LocalUpload(self.uploads)

    def final_path(self, task_id: int) -> str:
        return os.path.join(self.data_dir, EXPORTS, f"{int(task_id)}.csv")

    def export_file(self, task_id: int, state: dict | None, offset: int) -> PartFile:
        return PartFile(self.final_path(task_id) + PART, offset)

    def finish_export(self, task_id: int, state: dict | None) -> None:
        """Rename .part to .csv; safe to race (the run, and a download after a crash)."""
        final = self.final_path(task_id)
        if os.path.exists(final):
            return
        try:
            os.replace(final + PART, final)
        except FileNotFoundError:
            return  # renamed by the other party meanwhile, or gone
        dirfd = os.open(os.path.dirname(final), os.O_RDONLY)
        try:
            os.fsync(dirfd)
        finally:
            os.close(dirfd)

    def discard_export(self, task_id: int, state: dict | None) -> None:
        for path in glob.glob(glob.escape(self.final_path(task_id)) + "*"):
            unlink(path)

    def open_export(self, task_id: int) -> Download | None:
        path = self.final_path(task_id)
        return Download(path=path) if os.path.exists(path) else None

    def stored_exports(self) -> list[int]:
        names = os.listdir(os.path.dirname(self.final_path(0)))
        return sorted(
            {int(n[: -len(".csv")]) for n in names if n.endswith(".csv") and n[:-4].isdigit()}
        )

    def remove_orphans(self, max_age, needed, export_held=None) -> list[str]:
        """`.part` uploads untouched for `max_age` seconds that no live request holds
        (its process died mid-upload), and `.csv` uploads untouched for ten times as
        long that no task needs (the server died between saving the upload and
        creating its task, or a worker between completing and removing)."""
        return remove_orphans(self.uploads, max_age, needed)


def remove_orphans(
    folder: str, max_age: float, needed: Callable[[list[str]], set[str]]
) -> list[str]:
    now = time.time()
    removed, uploads = [], []
    try:
        entries = list(os.scandir(folder))
    except FileNotFoundError:
        return removed
    for entry in entries:
        try:
            age = now - entry.stat().st_mtime
        except FileNotFoundError:
            continue
        if entry.name.endswith(PART) and age >= max_age:
            if _unlink_unless_held(entry.path):
                removed.append(entry.path)
        elif entry.name.endswith(".csv") and age >= 10 * max_age:
            uploads.append(entry)
    if uploads:
        keep = needed([e.name for e in uploads])
        removed += [e.path for e in uploads if e.name not in keep and unlink(e.path)]
    return removed


def _unlink_unless_held(path: str) -> bool:
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False  # a live request is still writing it
    else:
        return unlink(path)
    finally:
        os.close(fd)
