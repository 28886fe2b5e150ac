"""A property of the teams kind, on generated files and interruptions (hypothesis).

Any teams file, applied over any earlier task's teams, by runs that are paused,
crash (the sweeper hands the task back), are handed back on shutdown, or are
overtaken by a stale duplicate, in batches of any size, ends with exactly what
applying each valid row once in file order gives: the tables and the task's
counters; each broken row is a row error once. Terminated, it leaves exactly
what was there before. Runs are driven in this process, on both stacks.
"""

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import text

from app.core import runner
from app.core.states import Outcome
from app.kinds.teams.job import TeamsJob
from tests.helpers import task
from tests.teams_helpers import World, counts_of, tables, upload_teams, write_teams

TEAMS = ["A", "B", "a", " A ", "Team C"]
EMAILS = ["x@y.io", "X@y.io", "z@y.io", " w@y.io"]
VALID = st.tuples(
    st.sampled_from(TEAMS),
    st.sampled_from(EMAILS),
    st.sampled_from(["", "N1", "N2"]),
    st.sampled_from(["", "member", "admin", "Admin"]),
)
BROKEN = st.sampled_from(
    [("", "x@y.io", "", ""), ("A", "bad", "", ""), ("B", "z@y.io", "", "boss")]
)
ROW = st.one_of(VALID.map(lambda r: (r, True)), BROKEN.map(lambda r: (r, False)))
STOP = st.tuples(st.sampled_from(["pause", "crash", "release", "stale"]), st.integers(0, 3))


def interrupted_run(store, tid: int, config: dict, how: str, after: int) -> None:
    """A run that commits `after` batches, then is stopped in the way `how` says."""
    claimed = store.claim(tid)
    assert claimed is not None
    token, row = claimed
    steps = TeamsJob(store, row, config).steps()
    try:
        for done, step in enumerate(s for s in steps if s is not None):  # None: a tick
            if done == after:
                if how == "pause":  # the batch under way is dropped; resume continues
                    assert store.transition(tid, "pause") == ("PAUSING", True)
                    assert store.commit(tid, token, step) == Outcome.PAUSED
                    assert store.transition(tid, "resume") == ("QUEUED", True)
                elif how == "crash":  # nothing committed; the sweeper hands it back
                    assert tid in store.sweep(-1)
                elif how == "release":  # SIGTERM: hand back at a checkpoint
                    assert store.release(tid, token)
                else:  # taken over, then the old run's batch arrives late
                    assert tid in store.sweep(-1)
                    new_token, _ = store.claim(tid)
                    assert store.commit(tid, token, step) == Outcome.LOST
                    assert store.release(tid, new_token)
                return
            outcome = store.commit(tid, token, step)
            if outcome != Outcome.CONTINUE:
                return  # completed (or failed) before the interruption
    finally:
        steps.close()


@pytest.fixture
def scratch(tmp_path):
    return tmp_path


@settings(
    max_examples=30,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=list(HealthCheck),
)
@given(
    earlier=st.lists(VALID, max_size=4),
    rows=st.lists(ROW, max_size=20),
    batch=st.integers(1, 4),
    stops=st.lists(STOP, max_size=4),
)
def test_interrupted_teams_tasks_apply_each_row_once(
    app, engine, scratch, earlier, rows, batch, stops
):
    store, client = app.extensions["store"], app.test_client()
    with engine.begin() as conn:  # each example starts from empty tables
        for table in ("memberships", "users", "teams"):
            conn.execute(text(f"DELETE FROM {table}"))
    config = {**app.config, "IMPORT_BATCH_SIZE": batch}

    def start(name, file_rows) -> int:
        response = upload_teams(client, write_teams(scratch / name, file_rows))
        assert response.status_code == 202, response.get_json()
        return response.get_json()["id"]

    first = start("earlier.csv", earlier)
    runner.run(store, first, config, lambda _: None)
    before = tables(engine)
    tid = start("t.csv", [r for r, _ in rows])
    for how, after in stops:
        if store.get(tid).status != "QUEUED":
            break
        interrupted_run(store, tid, config, how, after)
    if store.get(tid).status == "QUEUED":
        runner.run(store, tid, config, lambda _: None)
    done = task(client, tid)
    assert done["status"] == "COMPLETED"
    world = World()
    world.apply(earlier)
    counts = world.apply([r for r, ok in rows if ok])
    assert counts_of(done) == counts
    assert tables(engine) == world
    broken = [n for n, (_, ok) in enumerate(rows, 1) if not ok]
    errors = client.get(f"/tasks/{tid}/errors?limit=1000").get_json()["errors"]
    assert [e["row_number"] for e in errors] == broken
    assert [e["line_number"] for e in errors] == [n + 1 for n in broken]  # after the header
    assert (done["error_count"], done["last_row"]) == (len(broken), len(rows))
    assert store.transition(tid, "terminate") == ("TERMINATING", True)
    assert runner.rollback(store, tid, config)
    assert tables(engine) == before
    assert task(client, tid)["kept"] == {"teams": 0, "users": 0}
