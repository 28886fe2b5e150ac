"""Uploads, imports and exports in S3-compatible object storage (moto's server on loopback).

The reader: a dropped connection mid-read is requested again from the last byte
received, and batches read from an object are the file's, from every checkpoint.
The API: `POST /` with a JSON `source`, its 400s; uploads that fail leave nothing.
Exports: multipart, checkpointed at part boundaries, exact across pause, resume
and a killed worker; terminate removes the object and any incomplete parts.
The orphan sweep: what it aborts and what it keeps.
"""

import csv
import io
import os
import random
from pathlib import Path

import pytest

from app.core import storage
from app.kinds.imports.parser import CsvOptions, read_batches
from tests.helpers import (
    assert_exact,
    task,
    upload,
    wait_for,
    wait_rows,
    wait_status,
    write_rows,
)
from tests.netfaults import CuttingProxy, Refuser
from tests.s3 import aws_env, bucket_env, moto_endpoint, s3_client, stored

pytestmark = pytest.mark.s3  # `pytest -m s3`: the object-storage tests
S3 = pytest.mark.parametrize("stack", ["s3"], indirect=True)


def put(location: str, data: bytes) -> None:
    bucket, _, key = location[5:].partition("/")
    s3_client().put_object(Bucket=bucket, Key=key, Body=data)


def uploads_in_progress(bucket: str) -> list:
    return s3_client().list_multipart_uploads(Bucket=bucket).get("Uploads", [])


def csv_bytes(rows: int, seed: int = 0) -> bytes:
    rnd = random.Random(seed)
    out = io.StringIO(newline="")
    w = csv.writer(out)
    w.writerow(["id", "text", "n"])
    for i in range(rows):
        text = "".join(rnd.choice('ab ,"\n') for _ in range(rnd.randint(0, 30)))
        w.writerow([i, text, rnd.random()])
    return out.getvalue().encode()


@pytest.fixture
def bucket(monkeypatch):
    with bucket_env() as env:
        for k, v in env.items():
            monkeypatch.setenv(k, v)
        yield env


def test_a_dropped_read_is_requested_again_from_the_last_byte(bucket, monkeypatch):
    data = csv_bytes(60_000)
    location = bucket["STORAGE_URL"] + "/in/dropped.csv"
    put(location, data)
    host, port = moto_endpoint().rsplit("/", 1)[-1].split(":")
    proxy = CuttingProxy((host, int(port)), cut_after=700_000)
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", proxy.url)
    try:
        offset = 12_345
        with storage.open_range(location, offset) as f:
            got = f.read()
            reconnects = f.raw.reconnects
    finally:
        proxy.close()
    assert proxy.cuts == 1 and reconnects == 1
    assert got == data[offset:]  # nothing lost, nothing twice
    first, again = proxy.ranges[0].decode(), proxy.ranges[1].decode()
    assert first == f"bytes={offset}-"
    resumed = int(again[len("bytes=") : -1])
    # From the last byte received: past the start, below the cut (headers came first).
    assert offset + 600_000 < resumed < offset + 700_000


def test_batches_from_an_object_are_the_files_from_every_checkpoint(bucket, tmp_path):
    data = csv_bytes(5_000, seed=3)
    path = tmp_path / "f.csv"
    path.write_bytes(data)
    location = bucket["STORAGE_URL"] + "/in/f.csv"
    put(location, data)
    opts = CsvOptions()
    start = data.index(b"\n") + 1

    def batches(where, offset=start, row=0, line=2):
        return [
            (b.rows, [e.__dict__ for e in b.errors], b.offset, b.last_row, b.line_number)
            for b in read_batches(where, opts, 3, offset, row, line, 700, 10.0)
        ]

    on_disk, in_bucket = batches(path), batches(location)
    assert in_bucket == on_disk and len(on_disk) > 3
    for _rows, _errors, offset, row, line in on_disk[:-1]:  # resume at each checkpoint
        assert batches(location, offset, row, line) == batches(path, offset, row, line)


@S3
def test_import_from_a_source_object_and_its_400s(app, client, engine, start_worker, monkeypatch):
    start_worker()
    bucket_url = app.config["STORAGE_URL"].rsplit("/", 1)[0]
    location = f"{bucket_url}/incoming/big.csv"
    data = csv_bytes(20_000, seed=1)
    put(location, data)
    response = client.post("/", json={"source": location, "max_errors": 5})
    assert response.status_code == 202, response.get_json()
    tid = response.get_json()["id"]
    done = wait_status(client, tid, "COMPLETED")
    assert done["rows_imported"] == 20_000 and done["bytes_total"] == len(data)
    assert done["filename"] == "big.csv"
    assert_exact(engine, tid, 20_000)
    assert client.post(f"/terminate/{tid}").status_code == 202
    wait_status(client, tid, "REVOKED")
    assert stored(location)  # not ours: never deleted, completed or terminated

    def refused(body, *words):
        before = client.get("/tasks").get_json()["tasks"]
        answer = client.post("/", json=body)
        assert answer.status_code == 400, answer.get_json()
        message = answer.get_json()["error"]["message"]
        assert all(w in message for w in words), message
        assert client.get("/tasks").get_json()["tasks"] == before  # nothing created

    refused({"source": f"{bucket_url}/incoming/nope.csv"}, "no object", "nope.csv")
    refused({"source": "s3://another-bucket/x.csv"}, "another-bucket", "not in")
    refused({"source": app.config["STORAGE_URL"] + "/uploads/x.csv"}, "service's own")
    refused({"source": "/etc/passwd"}, "s3://bucket/key")
    refused({"source": location, "colour": "red"}, "colour")
    put(f"{bucket_url}/incoming/bin.csv", bytes(range(256)) * 10)
    refused({"source": f"{bucket_url}/incoming/bin.csv"}, "not text")
    put(f"{bucket_url}/incoming/empty.csv", b"")
    refused({"source": f"{bucket_url}/incoming/empty.csv"}, "empty")
    denier = Refuser()
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", denier.url)
    try:
        refused({"source": location}, "access denied", "big.csv")
    finally:
        denier.close()


@pytest.mark.parametrize("stack", ["sqlite"], indirect=True)
def test_a_source_import_needs_object_storage(client):
    answer = client.post("/", json={"source": "s3://b/k.csv"})
    assert answer.status_code == 400 and "STORAGE_URL" in answer.get_json()["error"]["message"]
    assert client.get("/tasks").get_json()["tasks"] == []


@S3
def test_uploads_stream_into_parts_and_a_refused_one_leaves_nothing(app, client, tmp_path):
    bucket = app.config["STORAGE_URL"][5:].split("/")[0]
    big = write_rows(tmp_path / "big.csv", 5_000)  # about 1 MB: several 256 KiB parts
    answer = upload(client, big)
    assert answer.status_code == 202
    location = app.extensions["store"].get(answer.get_json()["id"]).upload_path
    assert location.startswith(app.config["STORAGE_URL"] + "/uploads/") and stored(location)
    b, _, key = location[5:].partition("/")
    head = s3_client().head_object(Bucket=b, Key=key)
    assert head["ContentLength"] == big.stat().st_size and "-" in head["ETag"]  # multipart
    binary = tmp_path / "bin.csv"
    binary.write_bytes(os.urandom(800_000))  # parts are sent before the 400 is known
    before = s3_client().list_objects_v2(Bucket=bucket)["KeyCount"]
    assert upload(client, binary).status_code == 400
    assert s3_client().list_objects_v2(Bucket=bucket)["KeyCount"] == before
    assert uploads_in_progress(bucket) == []


@S3
def test_an_export_in_parts_is_exact_across_pause_resume_and_a_kill(
    app, client, engine, start_worker, tmp_path
):
    from tests.test_exports import assert_same_rows, downloaded, export, source_rows

    bucket = app.config["STORAGE_URL"][5:].split("/")[0]
    worker = start_worker(concurrency=1)
    path = write_rows(tmp_path / "e.csv", 30_000, seed=4)  # about 6 MB: many parts
    src = upload(client, path).get_json()["id"]
    wait_status(client, src, "COMPLETED")
    worker.kill_group()
    worker = start_worker(concurrency=1, IMPORT_MAX_ROWS_PER_S=15_000, HEARTBEAT_TIMEOUT_S=5)
    tid = export(client, task_id=src)
    wait_rows(client, tid, 5_000)  # a part or more is committed
    assert client.post(f"/pause/{tid}").status_code == 202
    paused = wait_status(client, tid, "PAUSED")
    parts = app.extensions["store"].get(tid).options
    assert '"parts"' in parts and paused["last_row"] >= 5_000
    assert client.post(f"/resume/{tid}").status_code == 202
    at = wait_rows(client, tid, paused["last_row"] + 5_000)["last_row"]
    worker.kill_group()  # mid-export: the next worker goes on from the last part
    worker = start_worker(concurrency=1, HEARTBEAT_TIMEOUT_S=5)
    done = wait_status(client, tid, "COMPLETED")
    assert done["rows_imported"] == done["rows_total"] == 30_000 and at < 30_000
    header, rows = downloaded(client, tid)
    assert assert_same_rows(rows, source_rows(path)[1]) == 30_000
    # One object, no parts left over (a run taken over under load gives its own up).
    wait_for(lambda: uploads_in_progress(bucket) == [], 30, "no incomplete uploads")
    export_key = app.config["STORAGE_URL"] + f"/exports/{tid}.csv"
    assert stored(export_key)
    assert client.post(f"/terminate/{tid}").status_code == 202
    wait_status(client, tid, "REVOKED")
    assert not stored(export_key) and uploads_in_progress(bucket) == []
    assert client.get(f"/tasks/{tid}/download").status_code == 404
    # Terminated mid-way: the object never made and its parts both go. Throttled, so
    # the export is still writing when it is looked at, however fast the machine.
    worker.kill_group()
    start_worker(concurrency=1, IMPORT_MAX_ROWS_PER_S=2_000)
    running = export(client, task_id=src)
    wait_rows(client, running, 3_000)
    assert uploads_in_progress(bucket) != []
    assert client.post(f"/terminate/{running}").status_code == 202
    wait_status(client, running, "REVOKED")
    assert uploads_in_progress(bucket) == [] and not stored(export_key[: -len(".csv")])


@S3
def test_the_sweep_aborts_what_no_task_holds_and_keeps_what_one_does(
    app, client, start_worker, tmp_path, monkeypatch
):
    from app.core.control import remove_orphan_uploads
    from tests.test_exports import export

    prefix = app.config["STORAGE_URL"]
    bucket, _, key_prefix = prefix[5:].partition("/")
    s3 = s3_client()
    worker = start_worker(concurrency=1, IMPORT_MAX_ROWS_PER_S=10_000)
    src = upload(client, write_rows(tmp_path / "s.csv", 20_000)).get_json()["id"]
    wait_status(client, src, "COMPLETED")
    held = export(client, task_id=src)
    wait_rows(client, held, 3_000)
    assert client.post(f"/pause/{held}").status_code == 202
    wait_status(client, held, "PAUSED")  # holds its multipart upload, parts listed
    worker.kill_group()
    queued = upload(client, write_rows(tmp_path / "q.csv", 10)).get_json()["id"]
    needed = app.extensions["store"].get(queued).upload_path

    def start(name):
        return s3.create_multipart_upload(Bucket=bucket, Key=f"{key_prefix}/{name}")["UploadId"]

    dead_upload = start("uploads/" + "a" * 32 + ".csv")  # its web process died mid-upload
    stray_export = start("exports/999999.csv")  # no such task
    orphan = f"{prefix}/uploads/{'d' * 32}.csv"
    put(orphan, b"a\n1\n")  # saved, then the server died before its task
    not_ours = f"s3://{bucket}/elsewhere/keep.csv"
    put(not_ours, b"a\n1\n")
    monkeypatch.setitem(app.config, "UPLOAD_PART_MAX_AGE_S", 0)
    with app.app_context():
        remove_orphan_uploads(app, app.extensions["store"])
    left = {(u["Key"].rsplit("/", 1)[-1], u["UploadId"]) for u in uploads_in_progress(bucket)}
    assert ("a" * 32 + ".csv", dead_upload) not in left
    assert ("999999.csv", stray_export) not in left
    assert [name for name, _ in left] == [f"{held}.csv"]  # the paused export's
    assert not stored(orphan) and stored(needed) and stored(not_ours)
    start_worker(concurrency=1)
    assert client.post(f"/resume/{held}").status_code == 202
    assert wait_status(client, held, "COMPLETED")["rows_imported"] == 20_000
    assert task(client, held)["rows_total"] == 20_000


def test_the_s3_settings_are_read(monkeypatch, tmp_path):
    from app import config

    monkeypatch.setenv("STORAGE_URL", "s3://b/p")
    monkeypatch.setenv("DATA_DIR", str(tmp_path))
    for k, v in aws_env("http://127.0.0.1:9").items():
        monkeypatch.setenv(k, v)
    settings = config.from_environment()
    chosen = storage.for_config(settings)
    assert (chosen.bucket, chosen.prefix, chosen.part_bytes) == ("b", "p/", 8 << 20)
    assert chosen.location("uploads/x.csv") == "s3://b/p/uploads/x.csv"
    monkeypatch.delenv("STORAGE_URL")
    local = storage.for_config(config.from_environment())
    assert type(local).__name__ == "LocalStorage"
    assert Path(local.uploads) == tmp_path / "uploads"
