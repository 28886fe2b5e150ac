"""Every odd input is a 4xx, never a 500: codecs, deep JSON, loose ids, file names."""

import codecs
import encodings
import io
import pkgutil
from urllib.parse import quote

import pytest

from app.core.uploads import clean_filename
from tests.helpers import task

CSV = b"name,amount\nab,1\n"


def codec_names() -> list[str]:
    """Every name Python's codec registry knows: modules and aliases."""
    names = {m.name for m in pkgutil.iter_modules(encodings.__path__)}
    return sorted(names | set(encodings.aliases.aliases) | {"undefined", "rot13", "idna"})


def post_csv(client, filename="a.csv", content=CSV, **form):
    data = {"file": (io.BytesIO(content), filename), **form}
    return client.post("/", data=data, content_type="multipart/form-data")


def post_raw_name(client, filename: str):
    """A multipart upload whose file name reaches the server exactly as given (CR, LF,
    NUL): RFC 2231's `filename*`, which a hand-made client can send."""
    name = quote(filename, safe="")
    head = f"--b\r\nContent-Disposition: form-data; name=file; filename*=UTF-8''{name}\r\n"
    body = head.encode() + b"Content-Type: text/csv\r\n\r\n" + CSV + b"\r\n--b--\r\n"
    return client.post("/", data=body, content_type="multipart/form-data; boundary=b")


def test_every_codec_in_the_registry_is_accepted_or_a_400(app, client):
    # Hundreds of uploads from one client, none finished (no worker): not the limits' test.
    app.config.update(RATE_LIMIT="1000000/second", MAX_ACTIVE_TASKS_PER_CLIENT=0)
    accepted = set()
    for name in codec_names():
        r = post_csv(client, encoding=name)
        assert r.status_code in (202, 400), (name, r.status_code, r.get_data(as_text=True))
        body = r.get_json()
        if r.status_code == 400:
            assert body["error"]["code"] == 400
        else:
            accepted.add(codecs.lookup(name).name)
    # The bytes-to-bytes and text-to-text codecs the issue found are all refused...
    for name in ("rot13", "base64", "hex", "zlib", "bz2", "quopri", "uu", "idna", "undefined"):
        assert codecs.lookup(name).name not in accepted, name
    # ...and the ASCII-compatible text encodings still work.
    assert {"utf-8", "latin-1" if "latin-1" in accepted else "iso8859-1", "cp1252"} <= accepted


def test_a_json_body_nested_100000_deep_is_a_400(client):
    body = "[" * 100_000 + "]" * 100_000
    r = client.post("/exports", data=body, content_type="application/json")
    assert r.status_code == 400, r.get_data(as_text=True)[:200]
    assert r.get_json()["error"]["code"] == 400
    deep = '{"task_id": ' + "[" * 100_000 + "]" * 100_000 + "}"
    r = client.post("/exports", data=deep, content_type="application/json")
    assert r.status_code == 400


@pytest.mark.parametrize("value", ["2.5", '"2"', "2.0", "true", "[2]", '{"id": 2}'])
def test_task_id_must_be_a_json_integer(client, app, value):
    store = app.extensions["store"]
    task_id = store.create_task(kind="import", filename="a.csv", header='["a"]', last_row=1)
    assert task_id <= 2
    r = client.post("/exports", data=f'{{"task_id": {value}}}', content_type="application/json")
    assert r.status_code == 400, (value, r.get_data(as_text=True))
    assert "task_id" in r.get_json()["error"]["message"]
    r = client.post("/exports", json={"task_id": task_id})
    assert r.status_code in (202, 409), r.get_data(as_text=True)


@pytest.mark.parametrize(
    "sent, stored",
    [
        ("evil\r\nname.csv", "evilname.csv"),
        ("nul\x00.csv", "nul.csv"),
        ("invoice\u202efdp.csv", "invoicefdp.csv"),  # the right-to-left override
        ("zero\u200bwidth\u2028line.csv", "zerowidthline.csv"),
        ("tab\there\x1b[31m.csv", "tabhere[31m.csv"),
        ("dir/../../etc/passwd", "passwd"),
        ("C:\\Users\\me\\data.csv", "data.csv"),
        ("ok-ünïcode 名.csv", "ok-ünïcode 名.csv"),
    ],
)
def test_file_names_are_stored_without_control_or_bidi_characters(client, sent, stored):
    r = post_raw_name(client, sent)
    assert r.status_code == 202, r.get_data(as_text=True)
    assert task(client, r.get_json()["id"])["filename"] == stored
    assert clean_filename(sent) == stored


def test_a_name_of_only_control_characters_still_gets_a_name():
    assert clean_filename("\u202e\r\n") == "upload"
    assert len(clean_filename("a" * 1000 + ".csv")) == 255
