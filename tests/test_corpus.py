"""The bad-input corpus: every file in tests/corpus through the real API and a real worker.

Each entry is `NAME.csv` (the bytes as uploaded) or `NAME.recipe.json` (a small
recipe expanded here, for files too big or too awkward to commit), with
`NAME.expect.json` beside it:

- `{"status": 400, "message_contains": "..."}`: refused at upload, no task, no file left;
- `{"status": "COMPLETED" | "FAILED", "rows": N, "errors": [[row_number, line_number,
  "reason substring", "raw prefix" (optional)], ...]}`: the import ends so, with
  exactly those rows and row errors (checked through the API and with SQL).

Optional keys: `form` (upload form fields), `entries` (`[[row_number, data], ...]`,
the complete list), `header`, `error_contains` (the task's `error`), `why` (the
reason for an expectation the SPEC leaves open) and `xfail` (a known bug, with
its description; the test then fails if the bug is gone, so the mark is removed).

One service (app, worker) per stack serves the whole corpus: files are small, and
starting a worker per file would cost more than the imports. The corpus also runs
on the "s3" stack (tests/s3.py): every shape read through ranged GETs, its batch
boundaries resumed from byte offsets in an object.
"""

import gzip
import json
from pathlib import Path

import pytest
from sqlalchemy import text

from app import create_app
from app.core.migrate import upgrade
from tests.helpers import Proc, stack_env, upload, wait_for, wait_status
from tests.s3 import stored, upload_names

pytestmark = pytest.mark.slow  # every test here starts real processes

CORPUS = Path(__file__).parent / "corpus"
FINAL = ("COMPLETED", "FAILED", "REVOKED")


def entries() -> list[str]:
    names = {p.name.split(".")[0] for p in CORPUS.iterdir() if p.name.endswith(".expect.json")}
    return sorted(names)


def expectation(name: str) -> dict:
    return json.loads((CORPUS / f"{name}.expect.json").read_text())


def expand(recipe: dict) -> bytes:
    """Build a file from a recipe: a list of pieces, optionally gzipped.

    A piece is `{"text": s, "encoding": "utf-8", "times": 1}`, `{"hex": "ff fe",
    "times": 1}` or `{"seq": "c{i}", "from": 1, "to": n, "sep": ",", "end": "\\n"}`.
    """
    out = bytearray()
    for piece in recipe["pieces"]:
        if "text" in piece:
            chunk = piece["text"].encode(piece.get("encoding", "utf-8"))
        elif "hex" in piece:
            chunk = bytes.fromhex(piece["hex"])
        else:
            names = (piece["seq"].format(i=i) for i in range(piece["from"], piece["to"] + 1))
            chunk = (piece.get("sep", ",").join(names) + piece.get("end", "\n")).encode()
        out += chunk * piece.get("times", 1)
    return gzip.compress(bytes(out), mtime=0) if recipe.get("gzip") else bytes(out)


def materialize(name: str, folder: Path) -> Path:
    """The corpus entry as a file to upload (recipes expanded into `folder`)."""
    plain = CORPUS / f"{name}.csv"
    if plain.exists():
        return plain
    path = folder / f"{name}.csv"
    path.write_bytes(expand(json.loads((CORPUS / f"{name}.recipe.json").read_text())))
    return path


def corpus_params():
    params = []
    for name in entries():
        why = expectation(name).get("xfail")
        marks = [pytest.mark.xfail(strict=True, reason=why)] if why else []
        params.append(pytest.param(name, id=name, marks=marks))
    return params


class Service:
    def __init__(self, app, worker: Proc):
        self.app, self.worker = app, worker
        self.client = app.test_client()
        self.store = app.extensions["store"]
        self.uploads = Path(app.config["DATA_DIR"]) / "uploads"


@pytest.fixture(scope="module", params=["sqlite", "postgres", "s3"])
def service(request, tmp_path_factory):
    """An app on the stack and one real worker (`python worker.py`), for the module."""
    base = tmp_path_factory.mktemp(f"corpus-{request.param}")
    with stack_env(request.param, base / "data") as env, pytest.MonkeyPatch.context() as mp:
        for key, value in env.items():
            mp.setenv(key, value)
        app = create_app({"TESTING": True})
        upgrade(app)
        # The cases' batch boundaries are the SQLite default's, on both stacks.
        full = {**env, "WORKER_CONCURRENCY": "2", "SWEEP_INTERVAL_S": "1"}
        full["IMPORT_BATCH_SIZE"] = "2000"
        worker = Proc.start(["worker.py"], full, base / "worker.log")
        try:
            wait_for(lambda: worker.log_contains(" ready."), 60, f"worker ready ({worker.log})")
            yield Service(app, worker)
        finally:
            worker.kill_group()
            from app.core.models import db

            with app.app_context():
                db.engine.dispose()


def sql(service, query: str, **params):
    with service.store.engine.connect() as conn:
        return conn.execute(text(query), params).all()


def all_pages(client, path: str, key: str) -> list:
    items = []
    while path:
        body = client.get(path).get_json()
        items += body[key]
        path = body["next"]
    return items


@pytest.mark.parametrize("name", corpus_params())
def test_corpus(service, name, tmp_path):
    expect = expectation(name)
    path = materialize(name, tmp_path)
    client = service.client
    before_files = upload_names(service.app.config)
    before_tasks = sql(service, "SELECT count(*) FROM tasks")[0][0]

    response = upload(client, path, **expect.get("form", {}))
    body = response.get_json()

    if expect["status"] == 400:
        assert response.status_code == 400, body
        assert set(body) == {"error"} and body["error"]["code"] == 400
        assert expect["message_contains"].lower() in body["error"]["message"].lower(), body
        assert sql(service, "SELECT count(*) FROM tasks")[0][0] == before_tasks
        assert upload_names(service.app.config) <= before_files  # nothing half-made
        return

    assert response.status_code == 202, body
    tid = body["id"]
    t = wait_status(client, tid, FINAL, timeout=120)
    rows, errors = expect["rows"], expect["errors"]
    consumed = rows + len(errors)
    assert (t["status"], t["rows_imported"], t["error_count"]) == (
        expect["status"],
        rows,
        len(errors),
    ), t
    if "header" in expect:
        assert t["header"] == expect["header"]
    if "error_contains" in expect:
        assert expect["error_contains"] in (t["error"] or "")
    if t["status"] == "COMPLETED":
        assert t["last_row"] == consumed and t["progress"] == 1
        assert t["bytes_done"] == t["bytes_total"] == path.stat().st_size
        upload_path = sql(service, "SELECT upload_path FROM tasks WHERE id = :t", t=tid)[0][0]
        wait_for(lambda: not stored(upload_path), 10, "the upload to be removed")

    # The rows, from SQL: each once, numbered 1..last_row except the rows in error.
    numbers = [
        n for (n,) in sql(service, "SELECT row_number FROM csv_entries WHERE task_id = :t", t=tid)
    ]
    assert len(numbers) == len(set(numbers)) == rows
    if t["status"] == "COMPLETED":
        bad = {e[0] for e in errors}
        assert set(numbers) == set(range(1, consumed + 1)) - bad

    # The row errors, from the API: numbers, lines, reasons, raw text.
    got = all_pages(client, f"/tasks/{tid}/errors", "errors")
    assert [(e["row_number"], e["line_number"]) for e in got] == [(e[0], e[1]) for e in errors]
    for e, want in zip(got, errors, strict=True):
        assert want[2] in e["reason"], (e, want)
        assert len(e["raw"].encode()) <= 1024 + 8  # cut at 1 KB (a character may be replaced)
        if len(want) > 3:
            assert e["raw"].startswith(want[3]), (e, want)

    if "entries" in expect:
        got = all_pages(client, f"/csv_entries?task_id={tid}", "entries")
        assert [[e["row_number"], e["data"]] for e in got] == expect["entries"]
