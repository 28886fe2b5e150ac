"""An export's file on disk: written as `<id>.csv.part`, renamed `<id>.csv` when done.

A run holds an exclusive lock on the .part file while it writes. A run that finds
it locked was handed the task while its predecessor is still alive (stalled past
the heartbeat timeout): it goes on in a fresh copy of the committed bytes, so the
stale run, whose commits are fenced off anyway, writes only into a file nobody
will read again.
"""

import fcntl
import glob
import logging
import os
import uuid

log = logging.getLogger(__name__)

EXPORTS = "exports"


def final_path(data_dir: str, task_id: int) -> str:
    return os.path.join(data_dir, EXPORTS, f"{int(task_id)}.csv")


def part_path(data_dir: str, task_id: int) -> str:
    return final_path(data_dir, task_id) + ".part"


class FileLost(Exception):
    """The file is shorter than its checkpoint says (removed or cut by hand)."""


class PartFile:
    """The .part file of a running export, locked, cut back to its checkpoint."""

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

    def sync(self) -> int:
        """Make what was written durable; return the file's length."""
        self.f.flush()
        os.fdatasync(self.f.fileno())
        return self.f.tell()

    def cut(self, offset: int) -> None:
        """Drop what was written past `offset` (a batch whose checkpoint was not committed)."""
        self.f.flush()
        if self.f.tell() > offset:
            self.f.truncate(offset)
            self.f.seek(offset)

    def close(self) -> None:
        if not self.f.closed:
            self.f.close()  # releases the lock


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


def finalize(data_dir: str, task_id: int) -> None:
    """Give a COMPLETED export's file its final name, if it does not have it yet.

    Idempotent and safe to race: the run does it once COMPLETED is committed, and
    a download does it too in case the run died between the commit and the rename.
    """
    part, final = part_path(data_dir, task_id), final_path(data_dir, task_id)
    if os.path.exists(final):
        return
    try:
        os.replace(part, final)
    except FileNotFoundError:
        return  # renamed by the other party meanwhile, or gone
    dirfd = os.open(os.path.dirname(final), os.O_RDONLY)
    try:
        os.fsync(dirfd)
    finally:
        os.close(dirfd)


def discard_files(data_dir: str, task_id: int) -> None:
    """Remove every file of an export (.csv, .part, copies left by a crash)."""
    for path in glob.glob(glob.escape(final_path(data_dir, task_id)) + "*"):
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
