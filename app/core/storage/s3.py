"""Uploads and exports as objects in S3-compatible storage (STORAGE_URL=s3://bucket/prefix).

Keys: `<prefix>/uploads/<uuid>.csv` (streamed in as a multipart upload, nothing
kept locally but the part in hand) and `<prefix>/exports/<id>.csv` (a multipart
upload whose parts are listed in the task's checkpoint; one object once finished).
Objects elsewhere in the bucket are only ever read (source imports).
"""

import logging
import uuid
from datetime import UTC, datetime

from app.core.storage.base import SNIFF_BYTES, Download, Storage, StorageError
from app.core.storage.s3client import call, client, open_object, split
from app.core.storage.s3parts import S3ExportFile, S3Upload, abort, complete

log = logging.getLogger(__name__)

PART_BYTES = 8 << 20  # S3 wants parts of at least 5 MiB (but the last)

__all__ = ["S3Storage", "delete_object", "open_object"]


def delete_object(location: str) -> None:
    bucket, key = split(location)
    call(location, client().delete_object, Bucket=bucket, Key=key)


class S3Storage(Storage):
    def __init__(self, url: str, data_dir: str, part_bytes: int | None = None):
        import boto3  # noqa: F401  (at start-up, so a first upload does not pay for it)

        self.bucket, prefix = split(url)
        self.prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""
        self.part_bytes = part_bytes or PART_BYTES

    def location(self, name: str) -> str:
        return f"s3://{self.bucket}/{self.prefix}{name}"

    def new_upload(self) -> S3Upload:
        return S3Upload(self.location(f"uploads/{uuid.uuid4().hex}.csv"), self.part_bytes)

    def read_source(self, location: str) -> tuple[int, bytes]:
        bucket, key = split(location)
        if bucket != self.bucket:
            raise StorageError(
                f"{location} is not in this service's bucket {self.bucket!r} (STORAGE_URL)"
            )
        if key.startswith((f"{self.prefix}uploads/", f"{self.prefix}exports/")):
            raise StorageError(f"{location} is one of the service's own files: import another")
        head = call(location, client().head_object, Bucket=bucket, Key=key)
        size = head["ContentLength"]
        if size == 0:
            return 0, b""
        with open_object(location, 0) as f:
            return size, f.read(SNIFF_BYTES + 1)

    def export_location(self, task_id: int) -> str:
        return self.location(f"exports/{int(task_id)}.csv")

    def export_file(self, task_id: int, state: dict | None, offset: int) -> S3ExportFile:
        return S3ExportFile(self.export_location(task_id), self.part_bytes, state, offset)

    def finish_export(self, task_id: int, state: dict | None) -> None:
        if state and state.get("upload_id"):
            complete(self.export_location(task_id), state["upload_id"], state["parts"])

    def discard_export(self, task_id: int, state: dict | None) -> None:
        location = self.export_location(task_id)
        _, key = split(location)
        delete_object(location)
        found = call(location, client().list_multipart_uploads, Bucket=self.bucket, Prefix=key).get(
            "Uploads", []
        )
        for upload in found:
            if upload["Key"] == key:
                abort(location, upload["UploadId"])

    def open_export(self, task_id: int) -> Download | None:
        location = self.export_location(task_id)
        try:
            stream = open_object(location, 0)
        except StorageError:
            return None
        return Download(stream=stream, size=stream.raw.size)

    def stored_exports(self) -> list[int]:
        from app.core.storage.s3orphans import stored_exports

        return stored_exports(self)

    def remove_orphans(self, max_age, needed, export_held) -> list[str]:
        """Upload objects no task needs (untouched for 10 x `max_age`); incomplete
        uploads no request is filling (no part for 10 x `max_age`); incomplete
        exports idle for `max_age` that no export holds (see control.export_holds)."""
        from app.core.storage.s3orphans import remove_orphans

        return remove_orphans(self, max_age, needed, export_held, datetime.now(UTC))
