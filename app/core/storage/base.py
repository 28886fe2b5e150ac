"""The storage interface both backends implement, and its errors."""

from collections.abc import Callable
from dataclasses import dataclass
from typing import BinaryIO

SNIFF_BYTES = 64 * 1024  # what an upload keeps of its start for inspection (and one more byte)


class StorageError(Exception):
    """A location that cannot be read as asked."""


class ObjectMissing(StorageError):
    """No object (or file) at the location."""


class ObjectDenied(StorageError):
    """The storage refused to let us read the object."""


class StorageUnavailable(StorageError):
    """The object storage could not be reached or failed; nothing was kept."""


@dataclass
class Download:
    """A finished export to send: a local path (sent as a file) or a stream and its size."""

    path: str | None = None
    stream: BinaryIO | None = None
    size: int = 0


class Storage:
    """Uploads and exports of one deployment (DATA_DIR or a bucket and prefix)."""

    def new_upload(self):
        """A writer an upload streams into: write(), head, commit() -> (location, size), abort()."""
        raise NotImplementedError

    def read_source(self, location: str) -> tuple[int, bytes]:
        """(size, first 64 KB and one byte) of an object to import as it is.

        Raises StorageError naming the problem (not ours to read, missing, denied).
        """
        raise StorageError(
            "importing from object storage needs STORAGE_URL=s3://bucket/prefix; "
            "upload the file instead"
        )

    def export_file(self, task_id: int, state: dict | None, offset: int):
        """The export's writer, cut back to its checkpoint (`offset` bytes, `state`)."""
        raise NotImplementedError

    def finish_export(self, task_id: int, state: dict | None) -> None:
        """Make a COMPLETED export's file whole under its final name; idempotent."""
        raise NotImplementedError

    def discard_export(self, task_id: int, state: dict | None) -> None:
        """Remove everything of an export: the file or object, parts, copies."""
        raise NotImplementedError

    def open_export(self, task_id: int) -> Download | None:
        """The finished export to send, or None if it is missing."""
        raise NotImplementedError

    def stored_exports(self) -> list[int]:
        """The ids of the exports whose finished file is stored (for their expiry)."""
        raise NotImplementedError

    def remove_orphans(
        self,
        max_age: float,
        needed: Callable[[list[str]], set[str]],
        export_held: Callable[[int, str], bool],
    ) -> list[str]:
        """Remove uploads and incomplete writes nothing will use; return what went.

        `needed(names)` says which upload names a task still needs;
        `export_held(task_id, upload_id)` whether an export still holds that upload.
        """
        raise NotImplementedError
