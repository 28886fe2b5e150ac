"""The object-storage half of the control loop's orphan sweep."""

import logging
import re

from app.core.storage.s3client import call, client, error_code
from app.core.storage.s3parts import abort

log = logging.getLogger(__name__)

EXPORT_KEY = re.compile(r"exports/(\d+)\.csv$")

# When this process first saw each incomplete upload: an upload counts as idle
# only for as long as it was watched idle (some servers, moto among them, report
# no true `Initiated`), so one created a moment ago is never taken for stale.
_first_seen: dict = {}


def _pages(op: str, **kwargs):
    yield from client().get_paginator(op).paginate(**kwargs)


def stored_exports(storage) -> list[int]:
    """The ids of the finished export objects under the prefix."""
    ids = set()
    prefix = f"{storage.prefix}exports/"
    for page in _pages("list_objects_v2", Bucket=storage.bucket, Prefix=prefix):
        for obj in page.get("Contents", []):
            if match := EXPORT_KEY.search(obj["Key"]):
                ids.add(int(match.group(1)))
    return sorted(ids)


def remove_orphans(storage, max_age: float, needed, export_held, now) -> list[str]:
    """See S3Storage.remove_orphans; `now` is an aware datetime."""
    bucket, prefix = storage.bucket, storage.prefix
    removed, old = [], []
    for page in _pages("list_objects_v2", Bucket=bucket, Prefix=f"{prefix}uploads/"):
        for obj in page.get("Contents", []):
            if (now - obj["LastModified"]).total_seconds() >= 10 * max_age:
                old.append(obj["Key"])
    if old:
        keep = needed([key.rsplit("/", 1)[-1] for key in old])
        for key in old:
            if key.rsplit("/", 1)[-1] not in keep:
                location = f"s3://{bucket}/{key}"
                call(location, client().delete_object, Bucket=bucket, Key=key)
                removed.append(location)
    seen = set()
    for page in _pages("list_multipart_uploads", Bucket=bucket, Prefix=prefix):
        for upload in page.get("Uploads", []):
            key, upload_id = upload["Key"], upload["UploadId"]
            seen.add(upload_id)
            location = f"s3://{bucket}/{key}"
            rest = key[len(prefix) :]
            if rest.startswith("uploads/"):
                stale = _idle_seconds(bucket, key, upload, now) >= 10 * max_age
            elif match := EXPORT_KEY.fullmatch(rest):
                stale = _idle_seconds(bucket, key, upload, now) >= max_age and not export_held(
                    int(match[1]), upload_id
                )
            else:
                continue  # not ours
            if stale:
                abort(location, upload_id)
                removed.append(f"{location} (incomplete upload {upload_id})")
    for gone in set(_first_seen) - seen:
        del _first_seen[gone]
    return removed


def _idle_seconds(bucket: str, key: str, upload: dict, now) -> float:
    """Seconds since the upload last received a part, began, or was first seen here."""
    last = max(upload["Initiated"], _first_seen.setdefault(upload["UploadId"], now))
    try:
        for page in _pages("list_parts", Bucket=bucket, Key=key, UploadId=upload["UploadId"]):
            for part in page.get("Parts", []):
                last = max(last, part["LastModified"])
    except Exception as exc:  # completed or aborted since it was listed: not idle
        if error_code(exc) != "NoSuchUpload":
            raise
        return 0.0
    return (now - last).total_seconds()
