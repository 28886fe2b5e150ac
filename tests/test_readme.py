"""Every curl example in README.md runs as written against a live `python run.py`
(with localhost:5001 pointed at it and sample files in the working folder). A
non-2xx answer passes only where the example's comment documents that status."""

import re
import subprocess

from tests.helpers import ROOT, write_rows

FENCE = re.compile(r"^```sh\n(.*?)^```", re.S | re.M)


SCRIPT = re.compile(r"^[A-Z_]+=\$\(", re.M)  # a block that names what it found: one script


def scripts() -> list[str]:
    """The curl blocks that keep values in shell variables: each runs whole, as one script."""
    blocks = FENCE.findall((ROOT / "README.md").read_text())
    return [b for b in blocks if "curl " in b and SCRIPT.search(b)]


def examples() -> list[tuple[str, str]]:
    """(command, the comments that go with it) for each curl line, in README order."""
    found, comments = [], []
    for block in FENCE.findall((ROOT / "README.md").read_text()):
        if SCRIPT.search(block):
            continue  # run whole by the test below
        block = block.replace("\\\n", " ")
        for line in block.splitlines():
            code, _, comment = line.partition(" #") if not line.startswith("#") else ("", "", line)
            if line.startswith("curl "):
                found.append((code.strip(), " ".join(comments) + " " + comment))
                comments = []
            elif line.startswith("#"):
                comments.append(line)
            else:
                comments = []
    return found


def test_every_curl_example_runs_as_written(live_server_factory, tmp_path):
    base = live_server_factory(IMPORT_MAX_ROWS_PER_S=2000)
    host = base.removeprefix("http://")
    work = tmp_path / "work"
    work.mkdir()
    write_rows(work / "people.csv", 20_000)  # still running when the actions come
    (work / "noheader.csv").write_text("a;1\nb;2\n")
    cases = examples()
    assert len(cases) >= 20, cases
    for command, comment in cases:
        command = command.replace("localhost:5001", host)
        if " | " in command:  # piped into a reader: curl must succeed, and so must the reader
            run = "set -o pipefail; " + command.replace("curl ", "curl --fail ", 1)
            done = subprocess.run(
                ["bash", "-c", run], cwd=work, capture_output=True, text=True, timeout=60
            )
            assert done.returncode == 0, (command, done.stdout[-500:], done.stderr)
            continue
        run = command + " -w '\\n%{http_code}\\n'"
        done = subprocess.run(
            ["bash", "-c", run], cwd=work, capture_output=True, text=True, timeout=60
        )
        assert done.returncode == 0, (command, done.stderr)
        code = done.stdout.strip().splitlines()[-1]
        assert code.startswith("2") or code in comment, (command, code, done.stdout[-500:])
        if "noheader.csv" in command:
            assert '"delimiter":";"' in done.stdout.replace(" ", ""), done.stdout


def test_every_curl_script_runs_as_written(live_server_factory, tmp_path):
    """A block that carries ids in shell variables (teams) runs as one script, from the
    repository's folder as it says, and stops at the first command that fails."""
    base = live_server_factory()
    host = base.removeprefix("http://")
    found = scripts()
    assert found, "no curl script in README.md"
    for script in found:
        run = "set -euo pipefail\n" + script.replace("localhost:5001", host)
        done = subprocess.run(
            ["bash", "-c", run], cwd=ROOT, capture_output=True, text=True, timeout=120
        )
        assert done.returncode == 0, (script, done.stdout[-1000:], done.stderr[-1000:])
