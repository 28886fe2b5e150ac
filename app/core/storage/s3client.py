"""The S3 client, error mapping and the ranged reader that survives dropped connections.

boto3 reads the standard AWS variables itself (AWS_ACCESS_KEY_ID,
AWS_SECRET_ACCESS_KEY, AWS_REGION, AWS_ENDPOINT_URL_S3 for MinIO and others).
"""

import io
import logging
import os
import time

from app import config

log = logging.getLogger(__name__)

READ_BUFFER = 1 << 20  # bytes per ranged read from the body (the reader's buffer)
KEEP_MAX = 64 << 20  # most bytes kept for pread (a batch's bytes, read again)
READ_RETRIES = 8  # consecutive dropped reads before the read fails

_clients: dict = {}


def client():
    """This process's S3 client (a boto3 client must not cross a fork)."""
    # Keyed by the endpoint too: the variables are read when the client is made.
    pid = (os.getpid(), *config.s3_endpoint())
    if pid not in _clients:
        import boto3
        from botocore.config import Config

        _clients.clear()
        _clients[pid] = boto3.client(
            "s3",
            config=Config(
                retries={"mode": "standard", "max_attempts": 5},
                connect_timeout=10,
                read_timeout=60,
                # Checksums only where the service requires them: S3-compatible
                # servers (MinIO, older ones) differ in what they accept.
                request_checksum_calculation="when_required",
                response_checksum_validation="when_required",
            ),
        )
    return _clients[pid]


def split(location: str) -> tuple[str, str]:
    """(bucket, key) of `s3://bucket/key`."""
    bucket, _, key = location[len("s3://") :].partition("/")
    return bucket, key


def error_code(exc: Exception) -> str:
    return str(getattr(exc, "response", {}).get("Error", {}).get("Code", ""))


def mapped(exc: Exception, location: str) -> Exception:
    """The storage error for a failed S3 call on `location`."""
    from app.core.storage.base import ObjectDenied, ObjectMissing, StorageUnavailable

    code = error_code(exc)
    if code in ("NoSuchKey", "404", "NotFound"):
        return ObjectMissing(f"no object at {location}")
    if code == "NoSuchBucket":
        return ObjectMissing(f"no bucket {split(location)[0]!r} for {location}")
    if code in ("AccessDenied", "403", "Forbidden", "AllAccessDisabled"):
        return ObjectDenied(f"access denied reading {location}: check the credentials' rights")
    if code in ("PreconditionFailed", "412"):
        return StorageUnavailable(f"{location} changed while it was read")
    return StorageUnavailable(f"{type(exc).__name__} on {location}: {exc}")


def call(location: str, fn, **kwargs):
    """Call an S3 operation, raising storage errors instead of botocore's."""
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        return fn(**kwargs)
    except (ClientError, BotoCoreError) as exc:
        raise mapped(exc, location) from exc


def _drops() -> tuple:
    """Errors that mean the connection dropped mid-body: re-request from where we are."""
    from botocore.exceptions import BotoCoreError
    from urllib3.exceptions import HTTPError

    return (BotoCoreError, HTTPError, OSError)


class _ObjectStream(io.RawIOBase):
    """An object read from a byte offset by ranged GETs.

    A dropped connection is re-requested from the last byte received (the same
    version of the object: If-Match its ETag). The bytes since the last `pread`
    position are kept (at most KEEP_MAX), so reading a batch's bytes again costs
    no request.
    """

    def __init__(self, location: str, offset: int):
        self.location = location
        self.bucket, self.key = split(location)
        head = call(location, client().head_object, Bucket=self.bucket, Key=self.key)
        self.size, self.etag = head["ContentLength"], head["ETag"]
        self.pos = min(offset, self.size)
        self.body = None
        self.kept, self.kept_from = bytearray(), self.pos
        self.reconnects = 0  # dropped reads re-requested (for tests and logs)

    def readable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.pos

    def readinto(self, b) -> int:
        if self.pos >= self.size:
            return 0
        data = self._read(len(b))
        n = len(data)
        b[:n] = data
        self.pos += n
        self.kept += data
        if len(self.kept) > KEEP_MAX:
            cut = len(self.kept) - KEEP_MAX
            del self.kept[:cut]
            self.kept_from += cut
        return n

    def _read(self, size: int) -> bytes:
        failures = 0
        while True:
            try:
                if self.body is None:
                    self.body = self._get(f"bytes={self.pos}-")
                data = self.body.read(size)
                if data:
                    return data
                raise EOFError("the connection closed before the object's end")
            except (*_drops(), EOFError) as exc:
                self._drop_body()
                failures += 1
                if failures > READ_RETRIES:
                    from app.core.storage.base import StorageUnavailable

                    raise StorageUnavailable(f"reading {self.location} failed: {exc}") from exc
                self.reconnects += 1
                log.warning(
                    "%s: read dropped at byte %d (%s); requesting again from there",
                    self.location,
                    self.pos,
                    exc,
                )
                time.sleep(min(0.05 * 2**failures, 5.0))

    def _get(self, byte_range: str):
        from botocore.exceptions import ClientError

        try:
            return client().get_object(
                Bucket=self.bucket, Key=self.key, Range=byte_range, IfMatch=self.etag
            )["Body"]
        except ClientError as exc:
            raise mapped(exc, self.location) from exc

    def _drop_body(self) -> None:
        if self.body is not None:
            try:
                self.body.close()
            except Exception:  # already broken: nothing to release
                pass
            self.body = None

    def pread(self, size: int, pos: int) -> bytes:
        """`size` bytes at `pos` (already read: from memory; else one ranged GET).

        Forgets what lies before `pos`: reads go forward, batch after batch.
        """
        start = pos - self.kept_from
        if start >= 0 and start + size <= len(self.kept):
            out = bytes(self.kept[start : start + size])
            del self.kept[:start]
            self.kept_from = pos
            return out
        if size <= 0:
            return b""
        body = self._get(f"bytes={pos}-{pos + size - 1}")
        try:
            return body.read()
        finally:
            body.close()

    def close(self) -> None:
        self._drop_body()
        super().close()


class ObjectRange(io.BufferedReader):
    """The buffered reader over an object (C readline); `pread` as a local file's."""

    def pread(self, size: int, pos: int) -> bytes:
        return self.raw.pread(size, pos)


def open_object(location: str, offset: int = 0) -> ObjectRange:
    """The object at `location`, read from byte `offset` (one HEAD, then ranged GETs)."""
    return ObjectRange(_ObjectStream(location, offset), READ_BUFFER)
