"""Where uploads and exports live: under DATA_DIR, or in S3-compatible object storage.

A *location* is what a task keeps (`upload_path`): a file path, or `s3://bucket/key`.
Reading and deleting go by the location, so a task made before STORAGE_URL changed
still runs; new uploads and exports go where STORAGE_URL says (`for_config`).

The rest of the code sees only this interface:

- `open_range(location, offset)`: a buffered binary reader from a byte offset
  (C `readline`; `pread(n, pos)` reads again what was just passed). On S3 a
  ranged GET that a dropped connection re-requests from the last byte received.
- `Storage.new_upload()`: a writer the upload streams into (`write`, then
  `commit()` -> (location, size) or `abort()`); `head` holds the first bytes.
- `Storage.export_file(task_id, state, offset)`, `finish_export`, `discard_export`,
  `open_export`: an export written in checkpointed steps, made one file or object.
- `delete(location)` and `Storage.remove_orphans(...)` for the control loop's sweep.

Importing this package is cheap (the CSV reader child imports it): boto3 is
imported only when an object is opened.
"""

import os

from app.core.storage.base import (
    SNIFF_BYTES,
    Download,
    ObjectDenied,
    ObjectMissing,
    Storage,
    StorageError,
    StorageUnavailable,
)

__all__ = [
    "SNIFF_BYTES",
    "Download",
    "ObjectDenied",
    "ObjectMissing",
    "Storage",
    "StorageError",
    "StorageUnavailable",
    "delete",
    "for_config",
    "is_object",
    "open_range",
]

_cache: dict = {}


def is_object(location: str) -> bool:
    """True if the location is an object in S3-compatible storage."""
    return location.startswith("s3://")


def for_config(config) -> Storage:
    """The storage new uploads and exports go to: STORAGE_URL's bucket, else DATA_DIR."""
    url, data_dir = config.get("STORAGE_URL"), config["DATA_DIR"]
    key = (url, data_dir, config.get("STORAGE_PART_BYTES"))
    if key not in _cache:
        if url:
            if not url.startswith("s3://") or not url[5:].split("/")[0]:
                raise ValueError(f"STORAGE_URL must be s3://bucket[/prefix], not {url!r}")
            from app.core.storage.s3 import S3Storage

            _cache[key] = S3Storage(url, data_dir, config.get("STORAGE_PART_BYTES"))
        else:
            from app.core.storage.local import LocalStorage

            _cache[key] = LocalStorage(data_dir)
    return _cache[key]


def open_range(location, offset: int = 0):
    """A buffered binary reader positioned at `offset` (see the module docstring)."""
    location = os.fspath(location)
    if is_object(location):
        from app.core.storage.s3 import open_object

        return open_object(location, offset)
    from app.core.storage.local import FileRange

    return FileRange(location, offset)


def delete(location: str | None) -> None:
    """Remove a file or object the service created; a missing one is no error."""
    if not location:
        return
    if is_object(location):
        from app.core.storage.s3 import delete_object

        delete_object(location)
    else:
        from app.core.storage.local import unlink

        unlink(location)
