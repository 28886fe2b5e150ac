"""Uploads stream to DATA_DIR while they arrive, through the real server (gunicorn)."""

from pathlib import Path

import requests

from tests.helpers import wait_for

MB = 1024 * 1024


def test_upload_streams_to_disk_while_it_arrives(live_server_factory, tmp_path):
    data_dir = tmp_path / "streamed"
    base = live_server_factory(DATA_DIR=str(data_dir))
    uploads = data_dir / "uploads"
    boundary = "----streamtestboundary"
    row = b"x" * 99 + b"\n"

    def parts_size() -> int:
        return sum(p.stat().st_size for p in uploads.glob("*.part"))

    def body():
        yield (
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; '
            'filename="big.csv"\r\nContent-Type: text/csv\r\n\r\nvalue\n'
        ).encode()
        for i in range(20):
            yield row * (MB // len(row))
            if i == 9:
                # Half the body is sent and the request is not finished: it must
                # already be on disk, in DATA_DIR, not held in memory.
                wait_for(lambda: parts_size() >= 8 * MB, 60, "the upload to reach the disk")
        yield f"\r\n--{boundary}--\r\n".encode()

    response = requests.post(
        f"{base}/",
        data=body(),
        headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
        timeout=120,
    )
    assert response.status_code == 202, response.text
    task = response.json()
    assert task["bytes_total"] == len(b"value\n") + 20 * (MB // len(row)) * len(row)
    assert [p.suffix for p in Path(uploads).iterdir()] == [".csv"]  # no part left behind
