"""Drive the dashboard in headless Chromium: for tests/test_page.py and bench/screenshot.py."""

import csv
import datetime as dt
import os
import re
import shutil

import pytest

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
HEADER = ["seq", "first", "last", "email", "age", "date"]
FIRST = ["Ada", "Alan", "Grace", "Edsger", "Barbara", "Donald", "Frances", "Ken"]
LAST = ["Lovelace", "Turing", "Hopper", "Dijkstra", "Liskov", "Knuth", "Allen", "Thompson"]


def missing_browser():
    """Return why the browser tests cannot run here, or None when they can."""
    if not os.path.exists(CHROMIUM):
        return f"{CHROMIUM} is missing (apt-get install chromium)"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "the playwright package is missing (pip install -r requirements-dev.txt)"
    return None


def require_browser():
    """Skip with the reason when the browser is missing; under CI=true fail instead."""
    reason = missing_browser()
    if reason and os.environ.get("CI") == "true":
        pytest.fail(f"browser tests cannot run under CI: {reason}")
    if reason:
        pytest.skip(reason)


def launch(playwright):
    """Debian's Chromium, headless; Playwright never downloads a browser of its own."""
    return playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)


def write_people_csv(path, rows, bad_rows=()):
    """Write `rows` data rows; the row numbers in `bad_rows` get a missing field (a row error)."""
    start = dt.date(2017, 1, 1)
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(HEADER)
        for seq in range(1, rows + 1):
            first, last = FIRST[seq % len(FIRST)], LAST[(seq // len(FIRST)) % len(LAST)]
            row = [
                seq,
                first,
                last,
                f"{first}.{last}{seq}@example.com".lower(),
                18 + seq % 60,
                (start + dt.timedelta(days=seq % 365)).isoformat(),
            ]
            writer.writerow(row[:-1] if seq in bad_rows else row)
    return path


def copy_as(path, name):
    """Copy a file beside itself under another name (so two tasks have different names)."""
    return shutil.copyfile(path, path.with_name(name))


class PageWatch:
    """Collects what a page must not produce: script errors, console errors, failed requests."""

    def __init__(self, page):
        self.errors = []
        self.failed = []
        self.api_calls = []
        page.on("pageerror", lambda exc: self.errors.append(f"pageerror: {exc}"))
        page.on("console", self._console)
        page.on("response", self._response)
        page.on("request", lambda req: self.api_calls.append(req.url))

    def _console(self, msg):
        # A 4xx answer is also logged by Chromium as "Failed to load resource"; those are
        # checked through self.failed instead, so that an expected refusal is allowed.
        if msg.type == "error" and not msg.text.startswith("Failed to load resource"):
            self.errors.append(f"console: {msg.text}")

    def _response(self, response):
        if response.status >= 400:
            path = re.sub(r"^https?://[^/]+", "", response.url)
            self.failed.append((response.request.method, path, response.status))

    def count(self, pattern):
        """How many requests went to URLs matching `pattern`."""
        return sum(1 for url in self.api_calls if re.search(pattern, url))


def open_dashboard(browser, base_url, width=1280, height=900):
    """Open the page in a fresh context; return the page and its PageWatch."""
    context = browser.new_context(
        locale="en-US", timezone_id="UTC", viewport={"width": width, "height": height}
    )
    page = context.new_page()
    watch = PageWatch(page)
    page.goto(base_url + "/")
    return page, watch


def upload(page, path):
    """Choose `path` in the form, submit it, and return the upload message locator."""
    page.get_by_label("CSV file", exact=True).set_input_files(str(path))
    page.get_by_role("button", name="Upload and import").click()
    return page.locator("#upload-message")


def drop_file(page, path):
    """Drop `path` on the form's drop zone, as a drag from the desktop would."""
    data_transfer = page.evaluate_handle(
        """([name, text]) => {
            const data = new DataTransfer();
            data.items.add(new File([text], name, { type: "text/csv" }));
            return data;
        }""",
        [path.name, path.read_text(encoding="utf-8")],
    )
    page.locator("#drop-zone").dispatch_event("dragover", {"dataTransfer": data_transfer})
    page.locator("#drop-zone").dispatch_event("drop", {"dataTransfer": data_transfer})


def uploaded_task_id(page, name):
    """Wait for the success message of the upload of `name`; return the new task's id."""
    from playwright.sync_api import expect

    message = page.locator("#upload-message")
    expect(message).to_contain_text(f"Uploaded {name}: task ", timeout=60_000)
    return re.search(r"task (\S+) is", message.inner_text()).group(1)


def task_row(page, task_id):
    """The table row of one task."""
    return page.locator(f'#task-rows tr[data-id="{task_id}"]')
