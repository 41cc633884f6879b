"""The dashboard at ``/`` in a real headless Chromium against a real server.

Chromium is Debian's ``chromium`` package (``.ci/run`` installs it), driven by Playwright's
Python API with ``executable_path``; Playwright's own browser downloads are never used.
Screenshots go to ``test-artifacts/`` at the repository root.
"""

from __future__ import annotations

import os
import shutil
import signal
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import pytest

from conftest import MakeServer, SpawnServer

playwright_api = pytest.importorskip(
    "playwright.async_api", reason="Playwright is not installed: pip install -e '.[test]'")
Browser = playwright_api.Browser
Page = playwright_api.Page
async_playwright = playwright_api.async_playwright
expect = playwright_api.expect

CHROMIUM = os.environ.get("SSE_JOBS_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts"
DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 390, "height": 844}
TIMEOUT = 15_000  # ms, for anything a job has to do first

pytestmark = pytest.mark.skipif(
    not Path(CHROMIUM).exists(),
    reason=f"no Chromium at {CHROMIUM}: apt-get install chromium (.ci/run does)")

# Records, for the test, every EventSource the page makes and every event it delivers.
# Injected by Playwright (not subject to the page's CSP); the page's code is unchanged.
RECORD_STREAMS = """
(() => {
  const Native = window.EventSource;
  const names = ["queued", "processing", "progress", "retrying", "completed", "failed",
                 "cancelled"];
  window.__sources = [];
  window.__events = [];
  window.EventSource = class extends Native {
    constructor(url, init) {
      super(url, init);
      const path = new URL(url, location.href).pathname;
      window.__sources.push(path);
      for (const name of names) {
        this.addEventListener(name, (e) => window.__events.push(
          {path, id: Number(e.lastEventId), data: JSON.parse(e.data)}));
      }
    }
  };
})();
"""

# Records every value the jobs table's progress bars take.
RECORD_BARS = """
() => {
  window.__bars = [];
  new MutationObserver((records) => {
    for (const r of records) window.__bars.push(Number(r.target.getAttribute("aria-valuenow")));
  }).observe(document.getElementById("jobs-body"),
             {subtree: true, attributes: true, attributeFilter: ["aria-valuenow"]});
}
"""

OpenDashboard = Callable[..., Awaitable[Page]]


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    async with async_playwright() as playwright:
        chromium = await playwright.chromium.launch(executable_path=CHROMIUM,
                                                    args=CHROMIUM_ARGS)
        yield chromium
        await chromium.close()


@pytest.fixture
async def dashboard(
    browser: Browser, request: pytest.FixtureRequest
) -> AsyncIterator[OpenDashboard]:
    """Open the dashboard of a server in a fresh browser context; afterwards save a
    screenshot and fail on script errors or Content-Security-Policy violations."""
    pages: list[Page] = []
    problems: list[str] = []

    async def open_dashboard(url: str, viewport: dict[str, int] | None = None) -> Page:
        context = await browser.new_context(viewport=viewport or DESKTOP, accept_downloads=True)
        await context.add_init_script(RECORD_STREAMS)
        page = await context.new_page()
        page.on("pageerror", lambda error: problems.append(f"page error: {error}"))
        page.on("console", lambda message: problems.append(f"console: {message.text}")
                if "Content Security Policy" in message.text else None)
        pages.append(page)
        await page.goto(url)
        await expect(page.locator("#connection")).to_have_attribute("data-state", "live",
                                                                    timeout=TIMEOUT)
        await expect(page.locator("#job-type")).to_be_enabled()
        return page

    yield open_dashboard
    ARTIFACTS.mkdir(exist_ok=True)
    for number, page in enumerate(pages):
        await page.screenshot(path=ARTIFACTS / f"{request.node.name}-{number}.png")
        await page.context.close()
    assert not problems, problems


async def api_json(method: str, url: str, body: dict[str, Any] | None = None) -> Any:
    async with aiohttp.ClientSession() as http, http.request(method, url, json=body) as answer:
        assert answer.status < 300, await answer.text()
        return await answer.json()


def fields(page: Page, *labels: str) -> list[Any]:
    return [page.get_by_label(label, exact=True) for label in labels]


def row_of(page: Page, job_id: str) -> Any:
    return page.locator(f'tr.job[data-id="{job_id}"]')


async def test_a_sleep_job_submitted_through_the_form_fills_its_bar_and_completes(
    make_server: MakeServer, dashboard: OpenDashboard
) -> None:
    server = await make_server()
    page = await dashboard(server.url)
    await page.evaluate(RECORD_BARS)

    await page.get_by_label("Job type").select_option("sleep")
    seconds, steps = fields(page, "Seconds", "Steps")
    await expect(seconds).to_have_value("5")  # the schema's defaults
    await expect(steps).to_have_value("10")
    await seconds.fill("1.5")
    await steps.fill("5")
    await page.get_by_role("button", name="Submit job").click()

    row = page.locator("tr.job")
    await expect(row).to_have_count(1)
    await expect(row.locator(".badge")).to_have_text("completed", timeout=TIMEOUT)
    bar = row.get_by_role("progressbar")
    await expect(bar).to_have_attribute("aria-valuenow", "100")
    await expect(row.locator(".percent")).to_have_text("100%")
    # the demo sleep type has three attempts: a restart mid-job runs it again
    await expect(row.locator(".cell-attempt")).to_have_text("1 / 3")
    await expect(row.locator(".cell-duration")).to_contain_text("s")
    bars = await page.evaluate("window.__bars")
    assert bars == sorted(bars), bars
    assert bars[-1] == 100, bars
    assert len([value for value in bars if 0 < value < 100]) >= 2, bars  # it moved live

    # The detail view replays the job's whole history from its own stream.
    job_id = await row.get_attribute("data-id")
    job = await api_json("GET", server.api(f"/jobs/{job_id}"))
    await row.get_by_role("link").click()
    detail = page.get_by_role("dialog")
    await expect(detail).to_be_visible()
    await expect(detail.locator("#detail-state")).to_have_text("completed")
    history = detail.locator("#detail-history li")
    await expect(history).to_have_count(job["last_event_id"])
    assert await detail.locator(".history-seq").all_inner_texts() == [
        f"#{seq}" for seq in range(1, job["last_event_id"] + 1)]
    await expect(detail.locator("#detail-result-json")).to_contain_text('"slept": 1.5')
    await expect(detail.get_by_role("button", name="Cancel job")).to_be_hidden()
    async with page.expect_download() as download_info:
        await detail.get_by_role("link", name="Download result").click()
    download = await download_info.value
    assert download.suggested_filename == f"sleep-{job_id}.json"
    await page.keyboard.press("Escape")
    await expect(detail).to_be_hidden()


async def test_invalid_params_show_the_servers_422_errors_beside_their_fields(
    make_server: MakeServer, dashboard: OpenDashboard
) -> None:
    server = await make_server()
    page = await dashboard(server.url)
    await page.get_by_label("Job type").select_option("sleep")
    seconds, steps = fields(page, "Seconds", "Steps")
    await seconds.fill("-1")
    await steps.fill("2.5")
    await page.get_by_role("button", name="Submit job").click()

    await expect(page.locator("#param-seconds-error")).to_have_text(
        "Input should be greater than or equal to 0")
    await expect(page.locator("#param-steps-error")).to_have_text(
        "Input should be a valid integer")
    await expect(seconds).to_have_attribute("aria-invalid", "true")
    await expect(steps).to_have_attribute("aria-invalid", "true")
    await expect(page.get_by_role("alert").first).to_contain_text("invalid params")
    await expect(seconds).to_be_focused()
    await expect(page.locator("tr.job")).to_have_count(0)

    await seconds.fill("0")
    await steps.fill("1")
    await page.get_by_role("button", name="Submit job").click()
    await expect(page.locator("tr.job")).to_have_count(1)
    await expect(page.locator("#param-seconds-error")).to_be_hidden()
    await expect(seconds).not_to_have_attribute("aria-invalid", "true")


async def test_a_running_job_is_cancelled_from_its_detail_view(
    make_server: MakeServer, dashboard: OpenDashboard
) -> None:
    server = await make_server()
    page = await dashboard(server.url)
    # Submitted elsewhere: the page learns of it from the global stream alone.
    job = await api_json("POST", server.api("/jobs"),
                         {"type": "sleep", "params": {"seconds": 30, "steps": 300}})
    row = row_of(page, job["id"])
    await expect(row.locator(".badge")).to_have_text("processing", timeout=TIMEOUT)

    await row.get_by_role("link").click()
    detail = page.get_by_role("dialog")
    await expect(detail.locator("#detail-state")).to_have_text("processing")
    await detail.get_by_role("button", name="Cancel job").click()
    await expect(detail.locator("#detail-state")).to_have_text("cancelled", timeout=TIMEOUT)
    await expect(detail.locator("#detail-error")).to_contain_text("Cancelled")
    await expect(detail.get_by_role("button", name="Cancel job")).to_be_hidden()
    await expect(detail.locator("#detail-history li").last).to_contain_text("cancelled")
    await detail.get_by_role("button", name="Close the job details").click()
    await expect(row.locator(".badge")).to_have_text("cancelled")
    assert (await api_json("GET", server.api(f"/jobs/{job['id']}")))["state"] == "cancelled"


async def test_the_detail_view_offers_file_results_and_explains_failures(
    make_server: MakeServer, dashboard: OpenDashboard
) -> None:
    server = await make_server()
    page = await dashboard(server.url)
    made = await api_json("POST", server.api("/jobs"), {
        "type": "write_file", "params": {"name": "hello.txt", "content": "hello, browser"}})
    failed = await api_json("POST", server.api("/jobs"), {
        "type": "flaky", "params": {"failures": 5}, "max_attempts": 1})
    await expect(row_of(page, made["id"]).locator(".badge")).to_have_text(
        "completed", timeout=TIMEOUT)
    await expect(row_of(page, failed["id"]).locator(".badge")).to_have_text(
        "failed", timeout=TIMEOUT)

    await page.goto(f"{server.url}/#/jobs/{made['id']}")  # a job's details have a link
    detail = page.get_by_role("dialog")
    await expect(detail.locator("#detail-state")).to_have_text("completed", timeout=TIMEOUT)
    async with page.expect_download() as download_info:
        await detail.get_by_role("link", name="Download result").click()
    download = await download_info.value
    assert download.suggested_filename == "hello.txt"
    assert Path(await download.path()).read_text() == "hello, browser"
    await page.keyboard.press("Escape")

    await row_of(page, failed["id"]).get_by_role("link").click()
    await expect(detail.locator("#detail-state")).to_have_text("failed")
    await expect(detail.locator("#detail-error")).to_contain_text(
        "exception (ValueError): attempt 1 fails on purpose")
    await expect(detail.get_by_role("link", name="Download result")).to_be_hidden()


async def test_older_jobs_are_listed_on_request(
    make_server: MakeServer, dashboard: OpenDashboard
) -> None:
    server = await make_server()
    async with aiohttp.ClientSession() as http:
        for n in range(53):
            async with http.post(server.api("/jobs"),
                                 json={"type": "echo", "params": {"value": n}}) as answer:
                assert answer.status == 202
    page = await dashboard(server.url)
    await expect(page.locator("tr.job")).to_have_count(50)
    await page.get_by_role("button", name="Load older jobs").click()
    await expect(page.locator("tr.job")).to_have_count(53)
    await expect(page.get_by_role("button", name="Load older jobs")).to_be_hidden()
    ids = [await row.get_attribute("data-id") for row in await page.locator("tr.job").all()]
    assert ids == sorted(ids, reverse=True)  # newest first


async def test_the_page_reconnects_after_a_server_restart_and_misses_no_event(
    spawn_server: SpawnServer, dashboard: OpenDashboard, tmp_path: Path
) -> None:
    db = tmp_path / "restart.db"
    options = ("--retry-ms", "300", "--retry-base", "0.1", "--retry-max", "0.2")
    server = spawn_server(*options, db=db)
    port = server.url.rsplit(":", 1)[1]
    page = await dashboard(server.url)
    listings: list[str] = []
    reconnects: list[Any] = []  # the global stream's requests after the page opened it
    page.on("request", lambda r: listings.append(r.url) if "/api/v1/jobs?" in r.url else None)
    page.on("request", lambda r: reconnects.append(r) if "/api/v1/events" in r.url else None)

    job = await api_json("POST", server.api("/jobs"), {
        "type": "sleep", "params": {"seconds": 3, "steps": 30}, "max_attempts": 2})
    row = row_of(page, job["id"])
    await page.wait_for_function(
        "id => Number(document.querySelector(`tr[data-id='${id}'] [role=progressbar]`)"
        "?.getAttribute('aria-valuenow')) >= 10", arg=job["id"], timeout=TIMEOUT)

    server.proc.send_signal(signal.SIGKILL)
    server.proc.wait(timeout=10)
    await expect(page.locator("#connection")).to_have_text("Reconnecting…", timeout=TIMEOUT)
    await expect(page.locator("#reconnect-banner")).to_be_visible()

    server = spawn_server(*options, "--port", port, db=db)
    await expect(page.locator("#connection")).to_have_text("Live", timeout=TIMEOUT)
    await expect(page.locator("#reconnect-banner")).to_be_hidden()
    await expect(row.locator(".badge")).to_have_text("completed", timeout=TIMEOUT)
    await expect(row.get_by_role("progressbar")).to_have_attribute("aria-valuenow", "100")
    await expect(row.locator(".cell-attempt")).to_have_text("2 / 2")

    # EventSource's own reconnect with Last-Event-ID: one stream object, every event once.
    stored = await api_json("GET", server.api(f"/jobs/{job['id']}"))
    sources = await page.evaluate("window.__sources")
    received = [e for e in await page.evaluate("window.__events")
                if e["path"] == "/api/v1/events"]
    assert sources.count("/api/v1/events") == 1, sources
    ids = [e["id"] for e in received]
    assert ids == sorted(set(ids)), ids
    # Each reconnect that reached the server resumed after the last id the page had.
    resumed = [(await r.all_headers()).get("last-event-id") for r in reconnects
               if await r.response() is not None]
    assert resumed, resumed
    assert all(last is not None and int(last) in ids for last in resumed), resumed
    ours = [e["data"] for e in received if e["data"]["job_id"] == job["id"]]
    assert [e["seq"] for e in ours] == list(range(1, stored["last_event_id"] + 1)), ours
    crashed = [e for e in ours if e["event"] == "retrying"]
    assert crashed, ours
    assert crashed[0]["error"]["type"] == "crashed", ours
    assert [e["event"] for e in ours].count("completed") == 1
    assert listings == [], listings  # caught up from the stream: no polling, no re-listing


async def test_screenshots_at_desktop_and_phone_width(
    make_server: MakeServer, dashboard: OpenDashboard
) -> None:
    server = await make_server(workers=2)
    api = server.api("/jobs")
    await api_json("POST", api, {"type": "report", "params": {"rows": 2000}})
    await api_json("POST", api, {"type": "flaky", "params": {"failures": 5}, "max_attempts": 1})
    await api_json("POST", api, {"type": "primes", "params": {"limit": 2_000_000}})
    cancelled = await api_json("POST", api, {"type": "sleep", "params": {"seconds": 60},
                                             "priority": -1})
    await api_json("POST", api, {"type": "sleep", "params": {"seconds": 30, "steps": 300}})
    await api_json("POST", api, {"type": "primes", "params": {"limit": 400_000_000,
                                                              "segments": 100}})
    await api_json("POST", server.api(f"/jobs/{cancelled['id']}/cancel"))
    await api_json("POST", api, {"type": "echo", "params": {"value": {"hello": "world"}}})

    page = await dashboard(server.url)
    await page.get_by_label("Job type").select_option("sleep")
    await expect(page.locator("tr.job .badge", has_text="processing")).to_have_count(
        2, timeout=TIMEOUT)
    await page.wait_for_function(
        "[...document.querySelectorAll('tr.job [role=progressbar]')]"
        ".some(bar => Number(bar.getAttribute('aria-valuenow')) >= 20)", timeout=TIMEOUT)
    ARTIFACTS.mkdir(exist_ok=True)
    await page.screenshot(path=ARTIFACTS / "dashboard-desktop.png", animations="disabled")
    if os.environ.get("SSE_JOBS_UPDATE_SCREENSHOT"):
        shutil.copy(ARTIFACTS / "dashboard-desktop.png", ROOT / "docs" / "dashboard.png")

    # Every form control has a label; nothing is wider than a phone.
    unlabelled = await page.evaluate(
        "[...document.querySelectorAll('#submit-form input, #submit-form select,"
        " #submit-form textarea')].filter(e => !e.labels.length).map(e => e.id)")
    assert unlabelled == []
    phone = await dashboard(server.url, viewport=PHONE)
    await expect(phone.get_by_role("button", name="Show form")).to_be_visible()
    assert await phone.evaluate("document.documentElement.scrollWidth <= innerWidth")
    await phone.screenshot(path=ARTIFACTS / "dashboard-phone.png", full_page=True,
                           animations="disabled")


async def test_with_api_tokens_the_page_signs_in_once_and_never_puts_the_token_in_a_url(
    make_server: MakeServer, browser: Browser, tmp_path: Path
) -> None:
    token = "alice-token-0123456789abcdef"
    tokens = tmp_path / "tokens"
    tokens.write_text(f"alice:{token}\n")
    server = await make_server(api_tokens_file=tokens)
    context = await browser.new_context(viewport=DESKTOP)
    page = await context.new_page()
    requests: list[Any] = []

    def record(request: Any) -> None:  # a bound method is refused as a Playwright handler
        requests.append(request)

    page.on("request", record)
    try:
        await page.goto(server.url)
        signin = page.locator("#signin")
        await expect(signin).to_be_visible(timeout=TIMEOUT)
        await page.get_by_label("API token").fill("not-the-token-0123456789")
        await page.get_by_role("button", name="Sign in").click()
        await expect(page.locator("#signin-error")).to_contain_text("not accepted")
        await page.get_by_label("API token").fill(token)
        await page.get_by_role("button", name="Sign in").click()
        await expect(signin).to_be_hidden()
        await expect(page.locator("#connection")).to_have_attribute("data-state", "live",
                                                                    timeout=TIMEOUT)
        assert await page.evaluate("sessionStorage.getItem('sse-jobs.api-token')") == token
        await expect(page.locator("#signed-in")).to_have_text("Signed in as alice")
        await expect(page.get_by_role("button", name="Sign out")).to_be_visible()

        await page.get_by_label("Job type").select_option("sleep")
        seconds, steps = fields(page, "Seconds", "Steps")
        await seconds.fill("0.3")
        await steps.fill("2")
        await page.get_by_role("button", name="Submit job").click()
        row = page.locator("tr.job")
        await expect(row.locator(".badge")).to_have_text("completed", timeout=TIMEOUT)
        await row.get_by_role("link").click()
        await expect(page.get_by_role("dialog").locator("#detail-state")).to_have_text(
            "completed")

        await page.reload()  # the tab keeps its token: no second sign-in
        await expect(page.locator("#connection")).to_have_attribute("data-state", "live",
                                                                    timeout=TIMEOUT)
        await expect(signin).to_be_hidden()
        await expect(page.locator("tr.job .badge")).to_have_text("completed")

        assert not [r.url for r in requests if token in r.url]
        streams = [r for r in requests if r.resource_type == "eventsource"]
        assert "/api/v1/events" in {urlsplit(r.url).path for r in streams}
        assert any("/api/v1/jobs/" in urlsplit(r.url).path for r in streams)
        for stream in streams:  # EventSource cannot send headers: each carries a stream token
            assert "token=" in urlsplit(stream.url).query, stream.url
            assert "authorization" not in await stream.all_headers()
        api_calls = [r for r in requests if r.resource_type == "fetch"
                     and urlsplit(r.url).path.startswith("/api/v1/")]
        sent = [(await r.all_headers()).get("authorization") for r in api_calls]
        assert "Bearer not-the-token-0123456789" in sent  # refused, then asked again
        assert sent[-1] == f"Bearer {token}"
        assert set(sent) <= {None, "Bearer not-the-token-0123456789", f"Bearer {token}"}
    finally:
        ARTIFACTS.mkdir(exist_ok=True)
        await page.screenshot(path=ARTIFACTS / "auth-mode.png")
        await context.close()


async def finished(url: str, job: dict[str, Any]) -> None:
    """Wait (bounded) for ``job``'s stream to end: its terminal event has been stored."""
    timeout = aiohttp.ClientTimeout(total=TIMEOUT / 1000)
    async with aiohttp.ClientSession(timeout=timeout) as http, http.get(
            url + job["links"]["events"]) as answer:
        assert answer.status == 200
        await answer.read()


def option(page: Page, select: str, value: str) -> Any:
    return page.locator(f'#{select} option[value="{value}"]')


@pytest.mark.backends("sqlite")
async def test_filters_by_state_and_type_show_counts_and_follow_new_jobs(
    make_server: MakeServer, dashboard: OpenDashboard
) -> None:
    server = await make_server()
    made = [await api_json("POST", server.api("/jobs"), body) for body in (
        {"type": "echo", "params": {"value": 1}}, {"type": "echo", "params": {"value": 2}},
        {"type": "flaky", "params": {"failures": 5}, "max_attempts": 1})]
    for job in made:
        await finished(server.url, job)
    page = await dashboard(server.url)
    await expect(page.locator("tr.job")).to_have_count(3)
    state, kind = fields(page, "State", "Type")

    await expect(option(page, "filter-state", "")).to_have_text("All states (3)")
    await expect(option(page, "filter-state", "completed")).to_have_text("completed (2)")
    await expect(option(page, "filter-state", "failed")).to_have_text("failed (1)")
    await expect(option(page, "filter-state", "queued")).to_have_text("queued (0)")
    await expect(option(page, "filter-type", "echo")).to_have_text("echo (2)")
    await expect(option(page, "filter-type", "flaky")).to_have_text("flaky (1)")

    await state.select_option("completed")
    await expect(page.locator("tr.job")).to_have_count(2)
    await expect(page.locator("tr.job .badge")).to_have_text(["completed", "completed"])
    await expect(option(page, "filter-type", "")).to_have_text("All types (2)")
    await expect(option(page, "filter-type", "flaky")).to_have_count(0)  # none completed
    await expect(option(page, "filter-type", "echo")).to_have_text("echo (2)")

    await state.select_option("")
    await kind.select_option("flaky")
    await expect(page.locator("tr.job")).to_have_count(1)
    await expect(row_of(page, made[2]["id"]).locator(".badge")).to_have_text("failed")
    await expect(option(page, "filter-state", "completed")).to_have_text("completed (0)")
    await state.select_option("completed")
    await expect(page.locator("tr.job")).to_have_count(0)
    await expect(page.locator("#jobs-none-match")).to_be_visible()
    await expect(page.locator("#jobs-empty")).to_be_hidden()

    await state.select_option("")
    await kind.select_option("echo")
    newer = await api_json("POST", server.api("/jobs"), {"type": "echo", "params": {"value": 3}})
    # Shown as it arrives on the global stream, and counted once it has changed state.
    await expect(row_of(page, newer["id"]).locator(".badge")).to_have_text(
        "completed", timeout=TIMEOUT)
    await expect(page.locator("tr.job")).to_have_count(3)
    await expect(option(page, "filter-type", "echo")).to_have_text("echo (3)", timeout=TIMEOUT)
    await expect(option(page, "filter-state", "completed")).to_have_text(
        "completed (3)", timeout=TIMEOUT)
    listed = await api_json("GET", server.api("/jobs?type=echo"))
    assert {job["id"] for job in listed["jobs"]} == {
        await row.get_attribute("data-id") for row in await page.locator("tr.job").all()}


@pytest.mark.backends("sqlite")
async def test_a_failed_job_is_re_run_and_a_finished_one_deleted_from_its_details(
    make_server: MakeServer, dashboard: OpenDashboard
) -> None:
    server = await make_server()
    done = await api_json("POST", server.api("/jobs"), {"type": "echo", "params": {"value": 1}})
    failed = await api_json("POST", server.api("/jobs"), {
        "type": "flaky", "params": {"failures": 5}, "max_attempts": 1})
    running = await api_json("POST", server.api("/jobs"),
                             {"type": "sleep", "params": {"seconds": 30, "steps": 300}})
    await finished(server.url, done)
    await finished(server.url, failed)
    page = await dashboard(server.url)
    detail = page.get_by_role("dialog")
    rerun = detail.get_by_role("button", name="Re-run job")

    await row_of(page, running["id"]).get_by_role("link").click()
    await expect(detail.locator("#detail-state")).to_have_text("processing", timeout=TIMEOUT)
    await expect(detail.get_by_role("button", name="Cancel job")).to_be_visible()
    await expect(rerun).to_be_hidden()
    await expect(detail.get_by_role("button", name="Delete job")).to_be_hidden()
    await page.keyboard.press("Escape")

    await row_of(page, done["id"]).get_by_role("link").click()
    await expect(detail.locator("#detail-state")).to_have_text("completed")
    await expect(rerun).to_be_hidden()  # only a failed or cancelled job is run again
    await detail.get_by_role("button", name="Delete job").click()
    await expect(detail.locator("#detail-action-status")).to_contain_text("Click again")
    await detail.get_by_role("button", name="Delete for good?").click()
    await expect(detail).to_be_hidden()
    await expect(row_of(page, done["id"])).to_have_count(0)
    async with aiohttp.ClientSession() as http, http.get(
            server.api(f"/jobs/{done['id']}")) as answer:
        assert answer.status == 404
    await expect(option(page, "filter-state", "completed")).to_have_text("completed (0)")

    await row_of(page, failed["id"]).get_by_role("link").click()
    await expect(detail.locator("#detail-state")).to_have_text("failed")
    async with page.expect_response(lambda r: r.request.method == "POST"
                                    and r.url.endswith(f"/api/v1/jobs/{failed['id']}/rerun")
                                    ) as answer_info:
        await rerun.click()
    answer = await answer_info.value
    assert answer.status == 202  # the page moves to the new job
    again = await answer.json()
    assert again["rerun_of"] == failed["id"]
    await expect(page).to_have_url(f"{server.url}/#/jobs/{again['id']}")
    await expect(detail.locator("#detail-id")).to_have_text(again["id"])
    await expect(row_of(page, again["id"])).to_have_count(1)


@pytest.mark.backends("sqlite")
async def test_the_full_job_id_is_copied_with_a_button(
    make_server: MakeServer, dashboard: OpenDashboard
) -> None:
    server = await make_server()
    job = await api_json("POST", server.api("/jobs"), {"type": "echo", "params": {"value": 1}})
    page = await dashboard(server.url)
    await page.context.grant_permissions(["clipboard-read", "clipboard-write"],
                                         origin=server.url)
    await row_of(page, job["id"]).get_by_role("link").click()
    detail = page.get_by_role("dialog")
    await expect(detail.locator("#detail-id")).to_have_text(job["id"])

    await detail.get_by_role("button", name="Copy the job id").click()
    await expect(detail.locator("#detail-action-status")).to_have_text("Copied the job id.")
    assert await page.evaluate("navigator.clipboard.readText()") == job["id"]


@pytest.mark.backends("sqlite")
async def test_without_tokens_nobody_is_signed_in_and_there_is_no_sign_out(
    make_server: MakeServer, browser: Browser
) -> None:
    server = await make_server()
    context = await browser.new_context(viewport=DESKTOP)
    # A token left in the tab from another server changes nothing here.
    await context.add_init_script(
        "sessionStorage.setItem('sse-jobs.api-token', 'left-over-token-0123456789')")
    page = await context.new_page()
    try:
        await page.goto(server.url)
        await expect(page.locator("#connection")).to_have_attribute("data-state", "live",
                                                                    timeout=TIMEOUT)
        await expect(page.locator("#signed-in")).to_be_hidden()
        await expect(page.get_by_role("button", name="Sign out")).to_be_hidden()
    finally:
        await context.close()
