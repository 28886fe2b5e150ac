"""Settings are read in app/config.py only."""

import re

from tests.helpers import ROOT

READS = re.compile(r"os\.environ\.get\(|os\.environ\[|os\.getenv\(|environ\.get\(")


def test_settings_are_read_only_in_config():
    files = [*(ROOT / "app").rglob("*.py"), *(ROOT / n for n in ("run.py", "worker.py"))]
    files.append(ROOT / "gunicorn.conf.py")
    readers = [
        f"{path.relative_to(ROOT)}:{n}"
        for path in files
        if path != ROOT / "app" / "config.py"
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if READS.search(line)
    ]
    assert readers == []
