"""Uploads stream straight to DATA_DIR/uploads under a name the server makes.

Nothing half-made stays behind: a part being written is locked (flock) by the
request writing it; a part whose request died (the web process was killed) is
no longer locked, and the control loop removes it, as it removes uploads no
task needs. A full disk while writing is a 507 and the part is removed at once.
"""

import fcntl
import os
import time
import unicodedata
import uuid
from collections.abc import Callable

from flask import Request, current_app

from app.core import guards
from app.web.errors import ApiError, no_room

UPLOADS = "uploads"
# Cc: C0/C1 controls (CR, LF, NUL); Cf: format (U+202E right-to-left override, U+200B);
# Zl/Zp: line and paragraph separators; Cs: lone surrogates; Co, Cn: private, unassigned.
UNSAFE_CATEGORIES = {"Cc", "Cf", "Zl", "Zp", "Cs", "Co", "Cn"}
PART = ".part"


def clean_filename(name: str, limit: int = 255) -> str:
    """A client's file name as we store and show it: its last path part, without
    control, format (bidi overrides, zero-width) or line/paragraph separator
    characters, at most `limit` characters."""
    base = name.replace("\\", "/").rsplit("/", 1)[-1]
    kept = "".join(c for c in base if unicodedata.category(c) not in UNSAFE_CATEGORIES)
    return kept.strip()[:limit] or "upload"


def insufficient_storage(exc: BaseException) -> ApiError | None:
    """The 507 for an error that means "no room" (disk or database), else None."""
    if not no_room(exc):
        return None
    return ApiError(
        507, "insufficient storage: the server has no room for this upload now; nothing was kept"
    )


class UploadRequest(Request):
    """Writes each uploaded file part to its own file in DATA_DIR while it streams.

    The multipart parser copies the body in small chunks, so memory stays flat
    whatever the size; files nobody adopts are removed when the request ends.
    """

    def _get_file_stream(
        self, total_content_length, content_type, filename=None, content_length=None
    ):
        folder = os.path.join(current_app.config["DATA_DIR"], UPLOADS)
        path = os.path.join(folder, f"{uuid.uuid4().hex}{PART}")
        part = open(path, "w+b")  # noqa: SIM115  (closed by adopt or discard_parts)
        self.__dict__.setdefault("upload_parts", []).append(part)
        # Held while this request lives (released by the kernel if the process dies).
        fcntl.flock(part.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        return part

    def _load_form_data(self) -> None:
        try:
            super()._load_form_data()
        except OSError as exc:
            error = insufficient_storage(exc)
            if error is None:
                raise
            discard_parts(self)  # give the space back at once
            drain(self)
            raise error from None


def drain(request, chunk: int = 1 << 16) -> None:
    """Read the rest of the body (bounded by MAX_CONTENT_LENGTH) so the client,
    still sending, reads our answer instead of a reset connection."""
    stream = request.stream
    try:
        while stream.read(chunk):
            pass
    except Exception:  # a client gone or over the limit: it will not read the answer anyway
        pass


def adopt(file_storage) -> tuple[str, int]:
    """Close an uploaded part, give it its final name; return (path, size).

    Raises the 507 ApiError if the last buffered bytes find no room.
    """
    stream = file_storage.stream
    part = stream.name
    try:
        stream.flush()
        size = os.fstat(stream.fileno()).st_size
        stream.close()
    except OSError as exc:
        error = insufficient_storage(exc)
        if error is None:
            raise
        _close_quietly(stream)
        _unlink(part)
        raise error from None
    final = part[: -len(PART)] + ".csv"
    os.replace(part, final)
    return final, size


def discard_parts(request) -> None:
    """Remove the request's upload parts that were not adopted (errors, aborts)."""
    for part in request.__dict__.get("upload_parts", ()):
        _unlink(part.name)
        _close_quietly(part)


def _close_quietly(f) -> None:
    try:
        f.close()  # flushes first: on a full disk that fails, and the file closes anyway
    except OSError:
        pass


def _unlink(path: str) -> bool:
    try:
        os.unlink(path)
        return True
    except FileNotFoundError:
        return False


def remove_orphans(
    folder: str, max_age: float, needed: Callable[[list[str]], set[str]]
) -> list[str]:
    """Remove upload files nothing will use again; return their paths.

    `.part` files untouched for `max_age` seconds that no live request holds (its
    process died mid-upload), and `.csv` files untouched for ten times as long
    whose names `needed(names)` does not return (the server died between saving
    the upload and creating its task, or a worker between completing and removing).
    """
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
        removed += [e.path for e in uploads if e.name not in keep and _unlink(e.path)]
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
        return _unlink(path)
    finally:
        os.close(fd)


def init_app(app) -> None:
    guards.werkzeug_form_parsing()  # UploadRequest overrides two private methods
    app.request_class = UploadRequest

    @app.teardown_request
    def _discard(_exc):
        from flask import request

        discard_parts(request)
