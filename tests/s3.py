"""Object storage for tests: moto's S3 server on loopback, one bucket per test.

The "s3" stack is the "postgres" stack (PostgreSQL + Redis) with STORAGE_URL
pointing at a fresh bucket in a moto server this process starts (`python -m
moto.server`, once per session). Parts are 256 KiB there (moto is told to allow
them), so small files still cross part boundaries; the service's default is 8 MiB.
"""

import atexit
import os
import subprocess
import sys
import time
import uuid
from contextlib import contextmanager
from pathlib import Path

from tests.helpers import free_port, need, wait_for

PART_BYTES = 256 * 1024
_server: dict = {}


def moto_endpoint() -> str:
    """http://127.0.0.1:PORT of this session's moto S3 server (started on first use)."""
    if "url" in _server:
        return _server["url"]
    import importlib.util

    need("moto", importlib.util.find_spec("moto") is not None, "pip install 'moto[server]'")
    port = free_port()
    log = open(Path(os.environ.get("TMPDIR", "/tmp")) / f"moto-{port}.log", "ab")  # noqa: SIM115
    env = {**os.environ, "S3_UPLOAD_PART_MIN_SIZE": str(PART_BYTES)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
        start_new_session=True,
    )
    atexit.register(lambda: (proc.kill(), proc.wait(), log.close()))
    url = f"http://127.0.0.1:{port}"

    def up():
        import requests

        try:
            return requests.get(f"{url}/moto-api/", timeout=2).status_code < 500
        except requests.RequestException:
            return False

    wait_for(up, 60, f"moto's server at {url}")
    _server.update(url=url, proc=proc)
    return url


def aws_env(endpoint: str) -> dict:
    return {
        "AWS_ENDPOINT_URL_S3": endpoint,
        "AWS_ACCESS_KEY_ID": "test",
        "AWS_SECRET_ACCESS_KEY": "test",
        "AWS_REGION": "us-east-1",
    }


def s3_client(endpoint: str | None = None):
    """A client of the test's own (not the service's) on moto's server."""
    import boto3

    env = aws_env(endpoint or moto_endpoint())
    return boto3.client(
        "s3",
        endpoint_url=env["AWS_ENDPOINT_URL_S3"],
        aws_access_key_id="test",
        aws_secret_access_key="test",
        region_name="us-east-1",
    )


@contextmanager
def bucket_env(prefix: str = "svc"):
    """Environment for the service on a fresh bucket: STORAGE_URL and the AWS variables."""
    endpoint = moto_endpoint()
    bucket = f"t-{uuid.uuid4().hex[:12]}"
    s3 = s3_client(endpoint)
    s3.create_bucket(Bucket=bucket)
    try:
        yield {
            **aws_env(endpoint),
            "STORAGE_URL": f"s3://{bucket}/{prefix}",
            "STORAGE_PART_BYTES": str(PART_BYTES),
        }
    finally:
        empty_and_remove(s3, bucket)


def empty_and_remove(s3, bucket: str) -> None:
    """Remove a test's bucket. A request a killed worker sent may still be landing
    (moto finishes it anyway): empty it again until it goes, or leave it to moto."""
    from botocore.exceptions import ClientError

    for _ in range(20):
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
            for obj in page.get("Contents", []):
                s3.delete_object(Bucket=bucket, Key=obj["Key"])
        for upload in s3.list_multipart_uploads(Bucket=bucket).get("Uploads", []):
            s3.abort_multipart_upload(Bucket=bucket, Key=upload["Key"], UploadId=upload["UploadId"])
        try:
            s3.delete_bucket(Bucket=bucket)
            return
        except ClientError:
            time.sleep(0.5)


def stored(location: str) -> bool:
    """True if the upload or export at `location` (a path or s3://) still exists."""
    if not location.startswith("s3://"):
        return os.path.exists(location)
    bucket, _, key = location[5:].partition("/")
    found = s3_client().list_objects_v2(Bucket=bucket, Prefix=key).get("Contents", [])
    return any(o["Key"] == key for o in found)


def upload_names(config) -> set[str]:
    """Names of the uploads (complete or being written) in the service's storage."""
    url = config.get("STORAGE_URL")
    if not url:
        return set(os.listdir(Path(config["DATA_DIR"]) / "uploads"))
    bucket, _, prefix = url[5:].partition("/")
    s3 = s3_client()
    key = f"{prefix.strip('/')}/uploads/"
    names = {o["Key"] for o in s3.list_objects_v2(Bucket=bucket, Prefix=key).get("Contents", [])}
    names |= {
        u["Key"] for u in s3.list_multipart_uploads(Bucket=bucket, Prefix=key).get("Uploads", [])
    }
    return names
