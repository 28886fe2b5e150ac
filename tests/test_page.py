"""The dashboard at GET /, driven in headless Chromium against the real service.

Set PAGE_SCREENSHOT=path to also save a screenshot (bench/screenshot.py does).
"""

import csv
import os
import re
import time

import pytest
from page_helpers import (
    copy_as,
    drop_file,
    launch,
    open_dashboard,
    require_browser,
    task_row,
    upload,
    uploaded_task_id,
    write_people_csv,
)

ROWS = 300_000
BAD_ROWS = (50_000, 150_000, 250_000)  # past the first 64 KB: recorded as row errors


def autumn_2017(line):
    """Whether a line of people.csv falls in the export's date range."""
    return "2017-08-01" <= line.rsplit(",", 1)[1] <= "2017-12-31"


@pytest.fixture(scope="module")
def browser():
    require_browser()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = launch(playwright)
        yield browser
        browser.close()


@pytest.fixture
def dashboard(browser):
    """Open the page of a server; close its browser context before the server stops."""
    contexts = []

    def open_page(base_url, **viewport):
        page, watch = open_dashboard(browser, base_url, **viewport)
        contexts.append(page.context)
        return page, watch

    yield open_page
    for context in contexts:
        context.close()


@pytest.fixture
def expect():
    from playwright.sync_api import expect

    expect.set_options(timeout=15_000)
    return expect


@pytest.fixture(scope="module")
def people_csv(tmp_path_factory):
    return write_people_csv(tmp_path_factory.mktemp("csv") / "people.csv", ROWS, BAD_ROWS)


def test_import_pause_resume_terminate(
    live_server_factory, dashboard, expect, people_csv, tmp_path
):
    base_url = live_server_factory(IMPORT_MAX_ROWS_PER_S="20000")
    started = time.monotonic()
    page, watch = dashboard(base_url, height=720)
    expect(page.get_by_text("No tasks yet.")).to_be_visible()

    # A refused upload is explained in words.
    empty = tmp_path / "empty.csv"
    empty.write_bytes(b"")
    message = upload(page, empty)
    expect(message).to_contain_text("Upload of empty.csv refused:")
    expect(message).to_contain_text("400")
    expect(message).to_have_class(re.compile(r"\berror\b"))

    # Upload the big file: its row shows up and its progress bar moves.
    upload(page, people_csv)
    task_id = uploaded_task_id(page, "people.csv")
    expect(page.locator("#upload-bar")).to_have_js_property("value", 1)  # upload events came
    row = task_row(page, task_id)
    badge = row.locator(".badge")
    expect(row.get_by_role("link", name="people.csv")).to_be_visible()
    expect(row.locator(".pct")).not_to_have_text("0 %")

    # Pause, then resume to the end.
    row.get_by_role("button", name="Pause people.csv").click()
    expect(badge).to_have_text("PAUSED", timeout=30_000)
    expect(row.get_by_role("button", name="Pause people.csv")).to_be_disabled()
    expect(row.get_by_role("button", name="Resume people.csv")).to_be_enabled()
    expect(row.locator(".col-rowss")).to_have_text("–")
    row.get_by_role("button", name="Resume people.csv").click()
    expect(badge).to_have_text(re.compile("QUEUED|PROCESSING|COMPLETED"))
    expect(badge).to_have_text("COMPLETED", timeout=120_000)
    expect(row.locator(".pct")).to_have_text("100 %")
    expect(row.locator(".col-rows")).to_have_text(f"{ROWS - len(BAD_ROWS):,}")
    expect(row.get_by_role("button", name="Resume people.csv")).to_be_disabled()
    expect(row.get_by_role("button", name="Terminate people.csv")).to_be_enabled()

    # The errors link opens the detail view with the row errors and a page of entries.
    row.locator(".col-errors").get_by_role("link", name=str(len(BAD_ROWS))).click()
    detail = page.locator("#detail")
    expect(detail).to_be_visible()
    expect(page.locator("#detail-heading")).to_contain_text("people.csv")
    expect(page.locator("#error-rows tr")).to_have_count(len(BAD_ROWS))
    expect(page.locator("#error-rows tr").first.locator("td").first).to_have_text(str(BAD_ROWS[0]))
    expect(page.locator("#entry-rows tr")).to_have_count(20)
    expect(page.locator("#entry-head")).to_contain_text("email")
    expect(page.locator("#entries-page")).to_have_text("Page 1: rows 1–20")
    page.get_by_role("button", name="Next page").click()
    expect(page.locator("#entries-page")).to_have_text("Page 2: rows 21–40")
    page.get_by_role("button", name="Previous page").click()
    expect(page.locator("#entries-page")).to_have_text("Page 1: rows 1–20")

    page.get_by_role("link", name="Close").click()
    expect(detail).to_be_hidden()

    # Another import: terminating asks first, then the task is REVOKED.
    other = copy_as(people_csv, "people-2.csv")
    upload(page, other)
    other_id = uploaded_task_id(page, "people-2.csv")
    other_row = task_row(page, other_id)
    expect(other_row.locator(".badge")).to_have_text("PROCESSING")
    expect(other_row.locator(".pct")).not_to_have_text(re.compile(r"^[0-2]?\d %$"), timeout=30_000)
    if os.environ.get("PAGE_SCREENSHOT"):
        page.screenshot(path=os.environ["PAGE_SCREENSHOT"], full_page=True)
    terminate = other_row.get_by_role("button", name="Terminate people-2.csv")
    terminate.click()
    dialog = page.get_by_role("dialog", name="Terminate this task?")
    expect(dialog).to_be_visible()
    dialog.get_by_role("button", name="Keep it").click()
    expect(dialog).to_be_hidden()
    terminate.click()
    dialog.get_by_role("button", name="Terminate", exact=True).click()
    expect(other_row.locator(".badge")).to_have_text("REVOKED", timeout=30_000)
    expect(terminate).to_be_disabled()
    expect(page.locator("#announce")).to_contain_text("people-2.csv is now")

    # About one poll a second, and nothing went wrong in the page.
    elapsed = time.monotonic() - started
    assert watch.count(r"/tasks\?") <= elapsed * 1.2 + 15
    assert watch.errors == []
    assert watch.failed == [("POST", "/", 400)]


def test_asks_for_the_token_on_401(live_server_factory, dashboard, expect, tmp_path):
    base_url = live_server_factory()
    page, watch = dashboard(base_url)

    def require_token(route):
        """Stand in for API_TOKEN: answer 401 unless the right bearer token comes."""
        request = route.request
        is_page = request.method == "GET" and re.search(r"//[^/]+/(static/.*)?$", request.url)
        if is_page or request.headers.get("authorization") == "Bearer s3cret":
            route.continue_()
        else:
            route.fulfill(status=401, json={"error": {"code": 401, "message": "token required"}})

    page.route("**/*", require_token)
    page.reload()
    dialog = page.get_by_role("dialog", name="API token")
    expect(dialog).to_be_visible()
    dialog.get_by_label("Token", exact=True).fill("s3cret")
    dialog.get_by_role("button", name="Use this token").click()
    expect(dialog).to_be_hidden()
    expect(page.get_by_text("No tasks yet.")).to_be_visible()

    # Uploads carry the token too.
    small = write_people_csv(tmp_path / "small.csv", 10)
    upload(page, small)
    uploaded_task_id(page, "small.csv")
    assert page.evaluate("sessionStorage.getItem('csvTasks.apiToken')") == "s3cret"
    assert watch.errors == []
    assert all(status == 401 for _, _, status in watch.failed)


def test_narrow_screen_drop_and_keyboard(live_server_factory, dashboard, expect, tmp_path):
    base_url = live_server_factory()
    page, watch = dashboard(base_url, width=375, height=740)
    small = write_people_csv(tmp_path / "small.csv", 50)
    drop_file(page, small)
    expect(page.locator("#drop-hint")).to_contain_text("Selected: small.csv")
    page.get_by_role("button", name="Upload and import").click()
    row = task_row(page, uploaded_task_id(page, "small.csv"))
    expect(row.locator(".badge")).to_have_text("COMPLETED", timeout=30_000)
    expect(row.get_by_role("button", name="Terminate small.csv")).to_be_visible()
    assert page.evaluate("document.documentElement.scrollWidth") <= 375

    # Keyboard: the file link is reachable and opens the detail view.
    row.get_by_role("link", name="small.csv").focus()
    page.keyboard.press("Enter")
    expect(page.locator("#detail-heading")).to_be_focused()
    expect(page.locator("#entry-rows tr")).to_have_count(20)
    assert watch.errors == []
    assert watch.failed == []


def test_export_and_download(live_server_factory, dashboard, expect, tmp_path):
    base_url = live_server_factory()
    page, watch = dashboard(base_url)
    small = write_people_csv(tmp_path / "small.csv", 400)
    upload(page, small)
    row = task_row(page, uploaded_task_id(page, "small.csv"))
    expect(row.locator(".badge")).to_have_text("COMPLETED", timeout=30_000)
    row.get_by_role("link", name="small.csv").click()
    expect(page.locator("#export-form")).to_be_visible()

    # Export the autumn of 2017 and download it once COMPLETED.
    form = page.locator("#export-form")
    form.get_by_label("Date column", exact=True).fill("date")
    form.get_by_label("From", exact=True).fill("2017-08-01")
    form.get_by_label("To", exact=True).fill("2017-12-31")
    form.get_by_role("button", name="Export", exact=True).click()
    expect(page.locator("#export-message")).to_contain_text("Export started: task ")
    export_id = re.search(r"task (\S+) is", page.locator("#export-message").inner_text()).group(1)
    export_row = task_row(page, export_id)
    expect(export_row.locator(".col-kind")).to_have_text("export")
    expect(export_row.locator(".badge")).to_have_text("COMPLETED", timeout=30_000)
    with page.expect_download() as download:
        export_row.get_by_role("link", name=re.compile("^Download")).click()
    with open(download.value.path(), encoding="utf-8", newline="") as f:
        rows = list(csv.reader(f))  # every field quoted, as exports write
    assert rows[0] == ["seq", "first", "last", "email", "age", "date"]
    in_autumn = [line for line in small.read_text().splitlines()[1:] if autumn_2017(line)]
    assert sorted(rows[1:]) == sorted(line.split(",") for line in in_autumn)
    assert watch.errors == []
    assert watch.failed == []


def test_buttons_follow_the_actions_the_api_sends(live_server_factory, dashboard, expect, tmp_path):
    """The page has no state table of its own: it enables exactly the task's `actions`."""
    base_url = live_server_factory()
    page, watch = dashboard(base_url)
    upload(page, write_people_csv(tmp_path / "small.csv", 50))
    row = task_row(page, uploaded_task_id(page, "small.csv"))
    expect(row.locator(".badge")).to_have_text("COMPLETED", timeout=30_000)
    buttons = {a: row.get_by_role("button", name=f"{a} small.csv") for a in ("Pause", "Resume")}
    buttons["Terminate"] = row.get_by_role("button", name="Terminate small.csv")
    for name, enabled in {"Pause": False, "Resume": False, "Terminate": True}.items():
        expect(buttons[name]).to_be_enabled(enabled=enabled)

    def rewrite_actions(route):
        """The server's answer, with actions no COMPLETED task has."""
        body = route.fetch().json()
        for item in body["tasks"]:
            item["actions"] = ["pause", "resume"]
        route.fulfill(json=body)

    page.route(re.compile(r"/tasks\?"), rewrite_actions)
    for name, enabled in {"Pause": True, "Resume": True, "Terminate": False}.items():
        expect(buttons[name]).to_be_enabled(enabled=enabled)
    expect(row.locator(".badge")).to_have_text("COMPLETED")
    page.unroute(re.compile(r"/tasks\?"))
    expect(buttons["Terminate"]).to_be_enabled()


def test_export_everything_and_what_the_rows_say(live_server_factory, dashboard, expect, tmp_path):
    """The page exports every import's rows; a row speaks a whole percentage; long
    names wrap at word breaks; no encoding is offered that the server refuses."""
    base_url = live_server_factory()
    page, watch = dashboard(base_url)
    long_name = "quarterly-report-" + "-".join(["section"] * 12) + ".csv"
    first = write_people_csv(tmp_path / long_name, 300)
    second = write_people_csv(tmp_path / "second.csv", 200)
    for path in (first, second):
        upload(page, path)
        row = task_row(page, uploaded_task_id(page, path.name))
        expect(row.locator(".badge")).to_have_text("COMPLETED", timeout=30_000)
    # The row's accessible name speaks "100 %" once, never the raw fraction ("1").
    expect(row.get_by_role("progressbar")).to_have_attribute("aria-valuetext", "100 %")
    expect(row).to_have_accessible_name(re.compile(r"^(?!.*\b1 100 %)(?!.*100 %.*100 %).*100 %"))
    link = page.get_by_role("link", name=long_name)
    style = link.evaluate(
        "a => getComputedStyle(a).overflowWrap + '/' + getComputedStyle(a).wordBreak"
    )
    assert style == "anywhere/normal"
    options = page.locator("#encodings option").evaluate_all("os => os.map(o => o.value)")
    assert "utf-16" not in options and "utf-8" in options

    form = page.locator("#export-all-form")
    form.get_by_role("button", name="Export all").click()
    message = page.locator("#export-all-message")
    expect(message).to_contain_text("Export started: task ")
    export_id = re.search(r"task (\S+) is", message.inner_text()).group(1)
    export_row = task_row(page, export_id)
    expect(export_row.locator(".badge")).to_have_text("COMPLETED", timeout=30_000)
    expect(export_row.locator(".pct")).to_have_text("100 %")
    with page.expect_download() as download:
        export_row.get_by_role("link", name=re.compile("^Download")).click()
    with open(download.value.path(), encoding="utf-8") as f:
        assert len(f.read().splitlines()) == 1 + 300 + 200  # header, then every row
    assert watch.errors == []
    assert watch.failed == []
