"""Multipart uploads: an upload streaming into an object, an export checkpointed at parts."""

import logging
import time

from app.core.storage.base import SNIFF_BYTES, ObjectMissing, StorageError
from app.core.storage.s3client import call, client, error_code, split

log = logging.getLogger(__name__)


class _Parts:
    """A multipart upload being filled: parts of at least `part_bytes` as the buffer fills."""

    def __init__(self, location: str, part_bytes: int, upload_id=None, parts=()):
        self.location, self.part_bytes = location, part_bytes
        self.bucket, self.key = split(location)
        self.upload_id = upload_id
        self.parts = [list(p) for p in parts]  # [number, etag, size]
        self.buf = bytearray()
        # Going on with an upload a lost run may still write to: it sends at most
        # one part past the checkpoint (its next commit is refused), numbered one
        # past the last listed. Skip that number; numbers need only ascend.
        self.next = self.parts[-1][0] + 2 if self.parts else 1

    def put_part(self) -> None:
        """Send the buffer as the next part (starting the upload if need be)."""
        if self.upload_id is None:
            self.upload_id = call(
                self.location,
                client().create_multipart_upload,
                Bucket=self.bucket,
                Key=self.key,
                ContentType="text/csv",
            )["UploadId"]
        number = self.next
        answer = call(
            self.location,
            client().upload_part,
            Bucket=self.bucket,
            Key=self.key,
            UploadId=self.upload_id,
            PartNumber=number,
            Body=bytes(self.buf),
        )
        self.parts.append([number, answer["ETag"], len(self.buf)])
        self.next = number + 1
        self.buf = bytearray()

    def finish(self) -> None:
        """Make the object: the buffer as the last part, or as the whole object."""
        if self.upload_id is None:
            call(
                self.location,
                client().put_object,
                Bucket=self.bucket,
                Key=self.key,
                Body=bytes(self.buf),
                ContentType="text/csv",
            )
            self.buf = bytearray()
            return
        if self.buf or not self.parts:
            self.put_part()
        complete(self.location, self.upload_id, self.parts)

    def abort(self) -> None:
        if self.upload_id is not None:
            abort(self.location, self.upload_id)


def complete(location: str, upload_id: str, parts: list) -> None:
    """Complete a multipart upload; done already (the object is there) is no error.

    The other party (the run, or a download after its crash) may have completed it,
    or our own first attempt did while its answer was lost (a slow server: the
    retries then find no upload): the object showing with the parts' size is success.
    """
    bucket, key = split(location)
    listed = [{"PartNumber": n, "ETag": etag} for n, etag, _size in parts]
    try:
        call(
            location,
            client().complete_multipart_upload,
            Bucket=bucket,
            Key=key,
            UploadId=upload_id,
            MultipartUpload={"Parts": listed},
        )
    except StorageError:
        if not _shows(location, sum(p[2] for p in parts)):
            raise


def _shows(location: str, size: int, seconds: float = 120.0) -> bool:
    """True once the object is there with `size` bytes (polled: completion takes time)."""
    bucket, key = split(location)
    deadline = time.monotonic() + seconds
    while True:
        try:
            head = call(location, client().head_object, Bucket=bucket, Key=key)
            if head["ContentLength"] == size:
                return True
        except ObjectMissing:
            pass
        if time.monotonic() > deadline:
            return False
        time.sleep(0.5)


def abort(location: str, upload_id: str) -> None:
    bucket, key = split(location)
    try:
        call(
            location,
            client().abort_multipart_upload,
            Bucket=bucket,
            Key=key,
            UploadId=upload_id,
        )
    except StorageError as exc:
        if error_code(exc.__cause__) != "NoSuchUpload":
            raise


class S3Upload:
    """An upload streaming into a new object; commit completes it, abort leaves nothing."""

    def __init__(self, location: str, part_bytes: int):
        self.parts = _Parts(location, part_bytes)
        self.head, self.size, self.done = b"", 0, False

    def write(self, data) -> int:
        if len(self.head) <= SNIFF_BYTES:
            self.head += bytes(data[: SNIFF_BYTES + 1 - len(self.head)])
        self.parts.buf += data
        self.size += len(data)
        if len(self.parts.buf) >= self.parts.part_bytes:
            self.parts.put_part()
        return len(data)

    def seek(self, pos: int, whence: int = 0) -> int:
        return 0  # the multipart parser rewinds; the object is read back by location

    def tell(self) -> int:
        return self.size

    def flush(self) -> None:
        pass

    def commit(self) -> tuple[str, int]:
        self.done = True
        try:
            self.parts.finish()
        except StorageError:
            self.parts.abort()
            raise
        return self.parts.location, self.size

    def abort(self) -> None:
        if not self.done:
            self.done = True
            self.parts.buf = bytearray()
            try:
                self.parts.abort()
            except StorageError:  # the sweep aborts it later
                log.warning("could not abort upload %s", self.parts.location, exc_info=True)


class S3ExportFile:
    """An export's multipart upload, checkpointed at part boundaries.

    The rows after the last part are buffered here (one part at most, and a batch)
    and written again by the next run if this one stops before they form a part.
    """

    def __init__(self, location: str, part_bytes: int, state: dict | None, offset: int):
        state = state or {}
        self.parts = _Parts(location, part_bytes, state.get("upload_id"), state.get("parts", ()))
        if sum(p[2] for p in self.parts.parts) != offset:
            from app.core.storage.local import FileLost

            raise FileLost(f"{location}: parts in the checkpoint do not add up to {offset} bytes")
        self.offset = offset

    def write(self, data: bytes) -> None:
        self.parts.buf += data

    def sync(self, mark: dict, done: bool = False) -> dict:
        """The checkpoint to commit now: `mark` at a part boundary, else nothing new."""
        size = len(self.parts.buf)
        if done:
            if self.parts.upload_id is None:
                self.parts.finish()  # small: one object, written whole
            elif size or not self.parts.parts:
                self.parts.put_part()  # the last part may be small; completed once COMPLETED
        elif size >= self.parts.part_bytes:
            self.parts.put_part()
        else:
            return {}
        self.offset += size
        state = {"upload_id": self.parts.upload_id, "parts": self.parts.parts}
        return {**mark, "bytes_done": self.offset, "storage": state}

    def cut(self, offset: int) -> None:
        self.parts.buf = bytearray()

    def abandon(self, committed: dict | None) -> None:
        """Abort the upload if this run began it and no checkpoint lists it."""
        if self.parts.upload_id and self.parts.upload_id != (committed or {}).get("upload_id"):
            try:
                self.parts.abort()
            except StorageError:  # the sweep aborts it later
                log.warning("could not abort %s", self.parts.location, exc_info=True)

    def close(self) -> None:
        self.parts.buf = bytearray()
