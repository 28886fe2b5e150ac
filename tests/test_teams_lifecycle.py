"""The teams kind with real worker processes on a real broker, on both stacks.

Pause and resume leave exactly the rows up to the checkpoint applied; terminate
undoes exactly what the task created and keeps what another task now uses; two
tasks touching the same teams at once create each row once between them. The
tasks are held open with IMPORT_MAX_ROWS_PER_S, as the import's tests do.
"""

from sqlalchemy import text

from tests.helpers import task, wait_for, wait_rows, wait_status
from tests.teams_helpers import (
    World,
    counts_of,
    creators,
    generated,
    tables,
    upload_teams,
    write_teams,
)
from tests.test_lifecycle import workers_for

N = 20_000
RATE = 4_000  # rows/s: batches of 200 rows every 50 ms


def start(client, path) -> int:
    response = upload_teams(client, path)
    assert response.status_code == 202, response.get_json()
    return response.get_json()["id"]


def applied(rows) -> tuple[World, dict]:
    world = World()
    return world, world.apply(rows)


def test_pause_and_resume_apply_each_row_once(client, engine, stack, start_worker, tmp_path):
    rows = generated(N, teams=60, users=8_000, seed=1)
    workers_for(stack, start_worker, IMPORT_MAX_ROWS_PER_S=RATE)
    tid = start(client, write_teams(tmp_path / "t.csv", rows))
    mark = 0
    for _ in range(2):
        mark = wait_rows(client, tid, mark + 3_000)["last_row"]
        assert client.post(f"/pause/{tid}").status_code == 202
        paused = wait_status(client, tid, "PAUSED")
        assert paused["last_row"] < N
        world, counts = applied(rows[: paused["last_row"]])  # exactly the rows before it
        assert counts_of(paused) == counts
        assert tables(engine) == world
        assert task(client, tid)["last_row"] == paused["last_row"]
        assert client.post(f"/resume/{tid}").status_code == 202
    done = wait_status(client, tid, "COMPLETED")
    world, counts = applied(rows)
    assert counts_of(done) == counts and done["rows_imported"] == N
    assert tables(engine) == world
    assert set(creators(engine)["memberships"].values()) == {tid}


def test_terminate_undoes_exactly_and_keeps_what_another_task_uses(
    client, engine, stack, start_worker, tmp_path
):
    workers = workers_for(stack, start_worker)
    before = [("Old", "old@x.com", "Olga", "admin"), ("Quiet", "q@x.com", "", "")]
    first = start(client, write_teams(tmp_path / "p.csv", before))
    wait_status(client, first, "COMPLETED")
    mine = [
        ("Old", "old@x.com", "", ""),  # exists: unchanged, untouched
        ("Old", "new1@x.com", "New One", ""),  # a new user in an old team
        ("A1", "old@x.com", "", "admin"),  # a new team with an old user
        ("A1", "new2@x.com", "", ""),
        ("A2", "new2@x.com", "", ""),
        *generated(500, teams=10, seed=3, prefix="a-"),
    ]
    doomed = start(client, write_teams(tmp_path / "a.csv", mine))
    done = wait_status(client, doomed, "COMPLETED")
    world = applied(before)[0]
    assert counts_of(done) == world.apply(mine)
    assert done["teams_created"] == 12 and tables(engine) == world
    # Another task now uses a team and a user the doomed task created; its row naming
    # a membership the doomed task created is unchanged, and keeps nothing.
    later = [
        ("A1", "b@x.com", "Bee", ""),
        ("Quiet", "new1@x.com", "", ""),
        ("A1", "new2@x.com", "", ""),
    ]
    other = start(client, write_teams(tmp_path / "b.csv", later))
    assert wait_status(client, other, "COMPLETED")["rows_unchanged"] == 1
    assert client.post(f"/terminate/{doomed}").status_code == 202
    revoked = wait_status(client, doomed, "REVOKED")
    # What is left: the rows of the tasks before and after, nothing else of the doomed one.
    left = applied(before)[0]
    left.apply(later[:2])
    left.users["new1@x.com"] = "New One"  # kept as the doomed task created it
    assert tables(engine) == left
    assert revoked["kept"] == {"teams": 1, "users": 1}  # A1 and new1@
    made = creators(engine)
    assert made["teams"] == {"Old": first, "Quiet": first, "A1": None}
    assert made["users"] == {
        "old@x.com": first,
        "q@x.com": first,
        "b@x.com": other,
        "new1@x.com": None,
    }
    assert set(made["memberships"].values()) == {first, other}
    assert counts_of(task(client, doomed)) == counts_of(done)  # what it did, still told
    assert client.get(f"/tasks/{doomed}/errors").get_json()["errors"] == []
    logs = "".join(w.log.read_text(errors="replace") for w in workers)
    assert "kept 1 teams that other tasks' memberships now use: 'A1'" in logs
    assert f"task {other}" in logs


def test_terminate_running_and_paused_tasks_leaves_what_was_before(
    client, engine, stack, start_worker, tmp_path
):
    workers_for(stack, start_worker, IMPORT_MAX_ROWS_PER_S=RATE)
    before = generated(300, teams=5, seed=9)
    first = start(client, write_teams(tmp_path / "p.csv", before))
    wait_status(client, first, "COMPLETED")
    world = tables(engine)
    rows = before[:100] + generated(N, teams=50, seed=4, prefix="r-")
    running = start(client, write_teams(tmp_path / "r.csv", rows))
    later = generated(N, teams=50, seed=5, prefix="s-")  # apart: nothing for one to keep
    paused = start(client, write_teams(tmp_path / "s.csv", later))
    wait_rows(client, running, 2_000)
    wait_rows(client, paused, 2_000)
    assert client.post(f"/pause/{paused}").status_code == 202
    wait_status(client, paused, "PAUSED")
    for tid in (running, paused):
        assert client.post(f"/terminate/{tid}").status_code == 202
    for tid in (running, paused):
        revoked = wait_status(client, tid, "REVOKED")
        assert revoked["kept"] == {"teams": 0, "users": 0}
    assert tables(engine) == world
    assert set(creators(engine)["teams"].values()) == {first}


def test_concurrent_tasks_on_the_same_teams_create_each_row_once(
    client, engine, stack, start_worker, tmp_path
):
    # Names and roles are functions of the key: the result does not depend on who wins.
    def rows(seed):
        return [
            (t, e, e.split("@")[0].upper(), "admin" if len(t + e) % 3 == 0 else "member")
            for t, e, _, _ in generated(N // 2, teams=400, users=3_000, seed=seed)
        ]

    first, second = rows(21), rows(22)
    slow = RATE // 2  # each has seconds left when the other starts, even on a busy machine
    if stack.get("REDIS_URL"):
        workers_for(stack, start_worker, IMPORT_MAX_ROWS_PER_S=slow)
    else:
        start_worker(concurrency=2, IMPORT_MAX_ROWS_PER_S=slow)
    # b goes first alone, so it creates teams and users that a's rows name later;
    # then both run at once from their checkpoints.
    a = start(client, write_teams(tmp_path / "a.csv", first))
    assert client.post(f"/pause/{a}").status_code == 202
    b = start(client, write_teams(tmp_path / "b.csv", second))
    wait_rows(client, b, 1_000)
    assert client.post(f"/pause/{b}").status_code == 202
    wait_status(client, b, "PAUSED")
    for tid in (a, b):
        assert client.post(f"/resume/{tid}").status_code == 202

    def both_running():
        ta, tb = task(client, a), task(client, b)
        assert "COMPLETED" not in (ta["status"], tb["status"]), "they did not overlap"
        return ta["last_row"] > 0 and tb["last_row"] > 0

    wait_for(both_running, 60, "both tasks under way at once", interval=0.01)
    ta, tb = wait_status(client, a, "COMPLETED"), wait_status(client, b, "COMPLETED")
    world, _ = applied(first + second)
    assert tables(engine) == world
    total = {k: ta[k] + tb[k] for k in counts_of(ta)}
    assert total == {
        "teams_created": len(world.teams),
        "users_created": len(world.users),
        "memberships_created": len(world.pairs),
        "rows_unchanged": N - len(world.pairs),
    }
    made = creators(engine)
    for name, key in (("teams", "teams_created"), ("users", "users_created")):
        assert sum(1 for c in made[name].values() if c == a) == ta[key]
    # Terminating one removes its memberships (a pair both named is the creator's),
    # and its teams and users but those the other's memberships use.
    now = tables(engine)
    pairs = {p: r for p, r in now.pairs.items() if made["memberships"][p] == a}
    teams = {t for t, _ in pairs}
    users = {e for _, e in pairs}
    left = World(
        {t for t in now.teams if made["teams"][t] != b or t in teams},
        {e: n for e, n in now.users.items() if made["users"][e] != b or e in users},
        pairs,
    )
    kept = {
        "teams": sum(1 for t, c in made["teams"].items() if c == b and t in teams),
        "users": sum(1 for e, c in made["users"].items() if c == b and e in users),
    }
    assert kept["teams"] > 0 and kept["users"] > 0
    assert client.post(f"/terminate/{b}").status_code == 202
    assert wait_status(client, b, "REVOKED")["kept"] == kept
    assert tables(engine) == left
    with engine.connect() as conn:
        mine = conn.execute(text("SELECT count(*) FROM teams WHERE created_by_task = :t"), {"t": b})
        assert mine.scalar() == 0
