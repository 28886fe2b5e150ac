"""The dashboard against a real server started with API_TOKEN, in headless Chromium.

The page and its assets load without the token; the page asks for it once and keeps it
for the tab; a download goes through a signed link, never the token in a URL; and the
Content-Security-Policy the server sends is never violated.
"""

import csv
import re

import pytest
from page_helpers import (
    PageWatch,
    launch,
    require_browser,
    task_row,
    upload,
    uploaded_task_id,
    write_people_csv,
)

TOKEN = "page-s3cret"

# Records every CSP violation the page meets, before any of its own script runs.
WATCH_CSP = """
window.__cspViolations = [];
document.addEventListener("securitypolicyviolation", (e) => {
  window.__cspViolations.push(`${e.violatedDirective} ${e.blockedURI}`);
});
"""


@pytest.fixture(scope="module")
def browser():
    require_browser()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = launch(playwright)
        yield browser
        browser.close()


@pytest.fixture
def expect():
    from playwright.sync_api import expect

    expect.set_options(timeout=15_000)
    return expect


def test_token_once_signed_download_and_no_csp_violation(
    browser, live_server_factory, expect, tmp_path
):
    base_url = live_server_factory(API_TOKEN=TOKEN)
    context = browser.new_context(locale="en-US", timezone_id="UTC", accept_downloads=True)
    context.add_init_script(WATCH_CSP)
    page = context.new_page()
    watch = PageWatch(page)
    urls = []
    page.on("request", lambda r: urls.append(r.url))
    try:
        response = page.goto(base_url + "/")
        assert response.status == 200
        assert "default-src 'self'" in response.headers["content-security-policy"]

        # The page asks for the token (its first API call met a 401), once.
        dialog = page.get_by_role("dialog", name="API token")
        expect(dialog).to_be_visible()
        dialog.get_by_label("Token", exact=True).fill(TOKEN)
        dialog.get_by_role("button", name="Use this token").click()
        expect(dialog).to_be_hidden()
        expect(page.get_by_text("No tasks yet.")).to_be_visible()

        # Import, then export, with the token the page keeps.
        small = write_people_csv(tmp_path / "small.csv", 400)
        upload(page, small)
        row = task_row(page, uploaded_task_id(page, "small.csv"))
        expect(row.locator(".badge")).to_have_text("COMPLETED", timeout=30_000)
        row.get_by_role("link", name="small.csv").click()
        page.get_by_label("Date column", exact=True).fill("date")
        page.get_by_role("button", name="Export", exact=True).click()
        expect(page.locator("#export-message")).to_contain_text("Export started: task ")
        export_id = re.search(r"task (\S+) is", page.locator("#export-message").inner_text())[1]
        export_row = task_row(page, export_id)
        expect(export_row.locator(".badge")).to_have_text("COMPLETED", timeout=30_000)

        # A reload keeps the token for the tab: no second question.
        page.reload()
        expect(task_row(page, export_id)).to_be_visible()
        expect(dialog).to_be_hidden()

        # The download goes through a signed link, which works without the token.
        with page.expect_download() as download:
            task_row(page, export_id).get_by_role("link", name=re.compile("^Download")).click()
        with open(download.value.path(), encoding="utf-8", newline="") as f:
            assert next(csv.reader(f)) == ["seq", "first", "last", "email", "age", "date"]
        assert re.search(rf"/tasks/{export_id}/download\?sig=", download.value.url)
        assert all(TOKEN not in url for url in urls)

        assert page.evaluate("window.__cspViolations") == []
        assert watch.errors == []
        assert [path for _, path, status in watch.failed if status != 401] == []
        assert all(path.startswith("/tasks?") for _, path, _ in watch.failed)  # the first poll
        assert len(watch.failed) == 1

        # The watch works: an inline script is refused and reported.
        with pytest.raises(Exception):  # noqa: B017  (playwright's error type varies)
            page.add_script_tag(content="window.inline = 1")
        assert page.evaluate("window.__cspViolations.length") == 1
    finally:
        context.close()
