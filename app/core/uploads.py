"""Uploads stream straight into storage (DATA_DIR, or the bucket) under a name the server makes.

Nothing half-made stays behind: a request's upload that is not committed is
aborted when the request ends; an upload whose request died (the web process was
killed) is removed by the control loop's orphan sweep, as are uploads no task
needs. No room while writing is a 507 and the part is removed at once; object
storage failing is a 503.
"""

import unicodedata

from flask import Request, current_app

from app.core import guards, storage
from app.web.errors import ApiError, no_room

# Cc: C0/C1 controls (CR, LF, NUL); Cf: format (U+202E right-to-left override, U+200B);
# Zl/Zp: line and paragraph separators; Cs: lone surrogates; Co, Cn: private, unassigned.
UNSAFE_CATEGORIES = {"Cc", "Cf", "Zl", "Zp", "Cs", "Co", "Cn"}


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


def _storage_error(exc: BaseException) -> ApiError | None:
    """The 4xx/5xx answer for an error storing an upload, or None to let it raise."""
    if isinstance(exc, storage.StorageUnavailable):
        return ApiError(503, f"object storage failed: {exc}; nothing was kept")
    return insufficient_storage(exc)


class UploadRequest(Request):
    """Streams each uploaded file part into storage while the request body arrives.

    The multipart parser copies the body in small chunks, so memory stays flat
    whatever the size; uploads nobody commits are aborted when the request ends.
    """

    def _get_file_stream(
        self, total_content_length, content_type, filename=None, content_length=None
    ):
        part = storage.for_config(current_app.config).new_upload()
        self.__dict__.setdefault("upload_parts", []).append(part)
        return part

    def _load_form_data(self) -> None:
        try:
            super()._load_form_data()
        except (OSError, storage.StorageUnavailable) as exc:
            error = _storage_error(exc)
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
    """Commit an uploaded part under its final name; return (location, size).

    Raises the 507 (no room) or 503 (object storage failed) ApiError, keeping nothing.
    """
    part = file_storage.stream
    try:
        return part.commit()
    except (OSError, storage.StorageUnavailable) as exc:
        part.abort()
        error = _storage_error(exc)
        if error is None:
            raise
        raise error from None


def head(file_storage) -> bytes:
    """The first bytes of an uploaded part (64 KB and one more), for inspection."""
    return file_storage.stream.head


def discard(file_storage) -> None:
    """Abort an uploaded part that will not be committed (it failed inspection)."""
    file_storage.stream.abort()


def discard_parts(request) -> None:
    """Abort the request's upload parts that were not committed (errors, aborts)."""
    for part in request.__dict__.get("upload_parts", ()):
        part.abort()


def init_app(app) -> None:
    guards.werkzeug_form_parsing()  # UploadRequest overrides two private methods
    app.request_class = UploadRequest

    @app.teardown_request
    def _discard(_exc):
        from flask import request

        discard_parts(request)
