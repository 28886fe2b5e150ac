"""The teams endpoints: uploads refused with a 400, row errors, pages, filters, 404s.

The runs are driven in this process (runner.run, the parser in its child), on
both stacks; workers, crashes and races are in test_teams_lifecycle/faults.
"""

import pytest
from sqlalchemy import text

from app.core import runner
from tests.helpers import task
from tests.teams_helpers import World, counts_of, tables, upload_teams, write_teams


def run(app, tid: int) -> dict:
    """Run a queued task to its end in this process; the task as the API shows it."""
    runner.run(app.extensions["store"], tid, app.config, lambda _: None)
    return task(app.test_client(), tid)


def start(app, client, tmp_path, rows, header=("team", "email", "name", "role"), **form):
    response = upload_teams(client, write_teams(tmp_path / "t.csv", rows, header), **form)
    assert response.status_code == 202, response.get_json()
    assert response.headers["Location"] == f"/tasks/{response.get_json()['id']}"
    assert response.get_json()["kind"] == "teams"
    return run(app, response.get_json()["id"])


BAD_UPLOADS = {
    "unknown column": (b"team,email,colour\nRed,a@x.com,blue\n", {}, "unknown column"),
    "no team column": (b"email,name\na@x.com,Ann\n", {}, "missing required column(s): team"),
    "no email column": (b"team\nRed\n", {}, "missing required column(s): email"),
    "no header": (b"Red,a@x.com\nBlue,b@x.com\n", {}, "unknown column"),
    "a column twice": (b"Team,team,email\nRed,Red,a@x.com\n", {}, "named twice"),
    "empty file": (b"", {}, "empty"),
    "binary": (b"team,email\n\x00\x01\x02", {}, "not text"),
    "bad delimiter": (b"team,email\n", {"delimiter": ";;"}, "one character"),
    "bad encoding": (b"team,email\n", {"encoding": "utf-16"}, "not supported"),
    "negative max_errors": (b"team,email\n", {"max_errors": -1}, "max_errors"),
}


@pytest.mark.parametrize("case", BAD_UPLOADS)
def test_bad_uploads_are_400s_and_create_no_task(client, tmp_path, case):
    content, form, words = BAD_UPLOADS[case]
    path = tmp_path / "bad.csv"
    path.write_bytes(content)
    response = upload_teams(client, path, **form)
    assert response.status_code == 400, response.get_json()
    assert words in str(response.get_json()["error"]["message"])
    assert client.get("/tasks").get_json()["tasks"] == []


def test_no_file_part_is_a_400(client):
    response = client.post("/teams/imports", data={"delimiter": ","})
    assert response.status_code == 400
    assert "file" in response.get_json()["error"]["message"]


def test_columns_in_any_order_and_case_and_optional_ones(app, client, engine, tmp_path):
    done = start(app, client, tmp_path, [("a@x.com", "Red")], header=(" EMAIL", "Team "))
    assert done["status"] == "COMPLETED" and counts_of(done) == {
        "teams_created": 1,
        "users_created": 1,
        "memberships_created": 1,
        "rows_unchanged": 0,
    }
    assert tables(engine) == World({"Red"}, {"a@x.com": None}, {("Red", "a@x.com"): "member"})


def test_rows_breaking_the_rules_are_row_errors(app, client, engine, tmp_path):
    rows = [
        ("Red", "Ann@X.com", "Ann", "Admin"),  # 1: valid; email lower-cased, role too
        (" Red ", "b@x.com", "", ""),  # 2: valid; the same team after trimming
        ("red", "b@x.com", "", ""),  # 3: valid; names are case-sensitive: another team
        ("", "c@x.com", "", ""),  # 4: no team
        ("T" * 101, "c@x.com", "", ""),  # 5: team too long
        ("Red", "c@@x.com", "", ""),  # 6: two @
        ("Red", "@x.com", "", ""),  # 7: empty local part
        ("Red", "c@localhost", "", ""),  # 8: no dot in the domain
        ("Red", "c d@x.com", "", ""),  # 9: whitespace
        ("Red", "c@" + "x" * 250 + ".com", "", ""),  # 10: over 254
        ("Red", "c@x.com", "N" * 201, ""),  # 11: name too long
        ("Red", "c@x.com", "", "owner"),  # 12: unknown role
        ("Multi\nline", "d@x.com", "Dee", ""),  # 13: valid, two lines in the file
        ("Red", "", "", ""),  # 14: no email (line 16: row 13 took two)
        ("Blue", "ann@x.com", "Not Ann", "member"),  # 15: valid; the user exists already
    ]
    done = start(app, client, tmp_path, rows)
    assert (done["status"], done["rows_imported"], done["error_count"], done["last_row"]) == (
        "COMPLETED",
        5,
        10,
        15,
    )
    errors = client.get(f"/tasks/{done['id']}/errors").get_json()["errors"]
    assert [(e["row_number"], e["line_number"]) for e in errors] == [
        (4, 5),
        (5, 6),
        (6, 7),
        (7, 8),
        (8, 9),
        (9, 10),
        (10, 11),
        (11, 12),
        (12, 13),
        (14, 16),
    ]
    assert errors[0]["raw"] == ",c@x.com,,\n" and errors[0]["reason"] == "team is empty"
    assert "not a valid address" in errors[2]["reason"]
    assert "role 'owner'" in errors[8]["reason"]
    assert errors[9]["raw"] == "Red,,,\n" and errors[9]["reason"] == "email is empty"
    world = World()
    world.apply([rows[i] for i in (0, 1, 2, 12, 14)])
    assert tables(engine) == world
    assert tables(engine).users["ann@x.com"] == "Ann"  # a user's name is set when created
    assert counts_of(done) == {
        "teams_created": 4,
        "users_created": 3,
        "memberships_created": 5,
        "rows_unchanged": 0,
    }


def test_repeated_rows_are_unchanged_and_header_only_completes(app, client, tmp_path):
    rows = [("Red", "a@x.com", "", "admin"), ("Red", "A@x.com", "", "member")]
    first = start(app, client, tmp_path, rows)
    assert (first["memberships_created"], first["rows_unchanged"]) == (1, 1)
    again = start(app, client, tmp_path, rows)
    assert counts_of(again) == {
        "teams_created": 0,
        "users_created": 0,
        "memberships_created": 0,
        "rows_unchanged": 2,
    }
    assert again["kept"] == {"teams": 0, "users": 0}
    empty = start(app, client, tmp_path, [])
    assert empty["status"] == "COMPLETED" and empty["progress"] == 1
    assert empty["rows_imported"] == 0 and empty["teams_created"] == 0


def test_too_many_row_errors_fail_the_task(app, client, tmp_path):
    rows = [("Red", f"u{i}@x.com", "", "") for i in range(5)] + [("", "x@x.com", "", "")] * 4
    failed = start(app, client, tmp_path, rows, max_errors=2)
    assert failed["status"] == "FAILED" and "max_errors" in failed["error"]
    assert failed["error_count"] == 4 and failed["memberships_created"] == 5


def page_all(client, path: str, key: str) -> tuple[list, int]:
    items, pages = [], 0
    while path:
        body = client.get(path).get_json()
        items += body[key]
        path, pages = body["next"], pages + 1
    return items, pages


def test_teams_and_members_pages_filters_and_404s(app, client, engine, tmp_path):
    names = ["b", "A", "a", "é", "Zed", "a b"]
    rows = [(n, f"u{i}@x.com", f"U{i}", "admin" if i % 2 else "") for i, n in enumerate(names)]
    rows += [("A", f"m{i:02d}@x.com", "", "") for i in range(7)]
    done = start(app, client, tmp_path, rows)
    teams, pages = page_all(client, "/teams?limit=2", "teams")
    assert [t["name"] for t in teams] == sorted(names)  # by name, code point order
    assert pages == 4  # 3 full pages, then an empty one
    by_name = {t["name"]: t for t in teams}
    assert by_name["A"]["members"] == 8 and by_name["b"]["members"] == 1
    assert all(t["created_by_task"] == done["id"] for t in teams)
    assert client.get("/teams?name=%20A%20").get_json()["teams"] == [by_name["A"]]
    assert client.get("/teams?name=a").get_json()["teams"] == [by_name["a"]]
    assert client.get("/teams?name=nope").get_json() == {"teams": [], "next": None}
    one = by_name["A"]
    assert client.get(f"/teams/{one['id']}").get_json() == one
    members, pages = page_all(client, f"/teams/{one['id']}/members?limit=3", "members")
    assert [m["email"] for m in members] == [
        "m00@x.com",
        *[f"m{i:02d}@x.com" for i in range(1, 7)],
        "u1@x.com",
    ]
    assert pages == 3
    assert members[-1] == {
        "user_id": members[-1]["user_id"],
        "email": "u1@x.com",
        "name": "U1",
        "role": "admin",
        "created_by_task": done["id"],
    }
    for path in ("/teams/999999", "/teams/999999/members", "/teams/9223372036854775807"):
        response = client.get(path)
        assert response.status_code == 404 and response.get_json()["error"]["code"] == 404
    for path in ("/teams?cursor=xyz", "/teams?limit=0", f"/teams/{one['id']}/members?cursor=-1"):
        assert client.get(path).status_code == 400
    # A cursor is opaque but any well-formed one is only a place in the order.
    assert client.get("/teams?cursor=ff00").status_code == 200
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM memberships")).scalar() == 13


def test_the_description_names_the_teams_endpoints_and_fields(client):
    spec = client.get("/openapi.json").get_json()
    paths = spec["paths"]
    assert {"/teams/imports", "/teams", "/teams/{team_id}", "/teams/{team_id}/members"} <= set(
        paths
    )
    form = spec["components"]["schemas"]["TeamsUpload"]
    assert set(form["properties"]) == {"file", "delimiter", "encoding", "max_errors"}
    task_fields = spec["components"]["schemas"]["Task"]["properties"]
    assert {"teams_created", "users_created", "memberships_created", "rows_unchanged", "kept"} <= (
        set(task_fields)
    )
    assert paths["/teams/imports"]["post"]["responses"]["202"]["headers"]["Location"]["required"]
