"""Write docs/screenshot.png by running the dashboard's browser test, which takes it mid-run.

Usage: python bench/screenshot.py [extra pytest arguments]
"""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TEST = "tests/test_page.py::test_import_pause_resume_terminate"


def main():
    """Run the test with PAGE_SCREENSHOT set; exit with its status."""
    target = ROOT / "docs" / "screenshot.png"
    target.parent.mkdir(exist_ok=True)
    env = dict(os.environ, PAGE_SCREENSHOT=str(target))
    command = [sys.executable, "-m", "pytest", "-q", TEST, *sys.argv[1:]]
    status = subprocess.call(command, cwd=ROOT, env=env)
    if status == 0:
        print(f"wrote {target.relative_to(ROOT)}")
    return status


if __name__ == "__main__":
    sys.exit(main())
