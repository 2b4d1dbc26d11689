"""The web console in a real browser: Debian's Chromium, driven by Playwright, against a real
`snapledger serve` on a free port (embedded defaults plus one large NDJSON source).

Screenshots of each screen go to tests/screenshots/ (git-ignored) for a human to look at.
Without /usr/bin/chromium these tests skip with the reason, and fail when CI is set.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import subprocess
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.servers import free_port, snapledger_exe, stop, wait_until, wait_until_up, write_big_source

CHROMIUM = Path("/usr/bin/chromium")
IN_CI = bool(os.environ.get("CI"))
SHOTS = Path(__file__).resolve().parents[1] / "screenshots"
LAPTOP = {"width": 1366, "height": 768}
TOKEN = "console-operator-token-0123456789"


def _missing(reason: str) -> None:
    if IN_CI:
        pytest.fail(reason + " (CI must run the console tests)")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not CHROMIUM.exists():
        _missing(f"{CHROMIUM} is missing: apt-get install -y chromium")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _missing("playwright is not installed: pip install -e '.[test]'")
    with sync_playwright() as p:
        chromium = p.chromium.launch(
            executable_path=str(CHROMIUM),
            headless=True,
            args=["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"],
        )
        yield chromium
        chromium.close()


@contextlib.contextmanager
def serving(directory: Path, config: str | None = None, env: dict[str, str] | None = None) -> Iterator[str]:
    """`snapledger serve` in `directory`, with no SNAPLEDGER_ variables but the config file."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("SNAPLEDGER_")}
    if config is not None:
        (directory / "snapledger.toml").write_text(config)
        clean["SNAPLEDGER_CONFIG"] = str(directory / "snapledger.toml")
    port = free_port()
    proc = subprocess.Popen(
        [snapledger_exe(), "serve", "--port", str(port)],
        cwd=directory,
        env={**clean, **(env or {})},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until_up(base, proc)
        yield base
    finally:
        stop(proc, timeout=15)


class Server:
    def __init__(self, base: str, directory: Path) -> None:
        self.base, self.directory = base, directory


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, browser: Any) -> Iterator[Server]:
    """Embedded defaults (demo source, local storage, scratch target) plus source `big`.
    zstd at level 19 makes a snapshot of `big` run long enough to stop it from the console."""
    directory = tmp_path_factory.mktemp("console")
    big = write_big_source(directory / "big")
    config = (
        f'[sources.big]\nkind = "ndjson"\npath = "{big}"\n\n[archive]\ncompression = "zstd"\nlevel = 19\n'
    )
    with serving(directory, config) as base:
        yield Server(base, directory)


@contextlib.contextmanager
def console(browser: Any, base: str, before: Any = None) -> Iterator[Any]:
    """A fresh browser tab on the console; page errors fail the test."""
    from playwright.sync_api import expect

    context = browser.new_context(viewport=LAPTOP, accept_downloads=True)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    if before:
        before(page)
    page.goto(base + "/")
    expect(page.get_by_role("heading", name="snapledger", level=1)).to_be_visible()
    try:
        yield page
    finally:
        # Routes still handling a request when the tab closes must not fail a later test.
        page.unroute_all(behavior="ignoreErrors")
        context.close()
    assert not errors, errors


def shot(page: Any, name: str, section: str | None = None) -> None:
    SHOTS.mkdir(exist_ok=True)
    if section:
        page.evaluate("s => document.querySelector(s).scrollIntoView({block: 'start'})", section)
        page.evaluate("window.scrollBy(0, -60)")  # below the sticky top bar
    page.screenshot(path=str(SHOTS / f"{name}.png"))


def row(page: Any, table: str, name: str | re.Pattern[str]) -> Any:
    exact = isinstance(name, str)
    header = page.get_by_role("rowheader", name=name, exact=exact)
    return page.locator(f"#{table}-table tbody tr", has=header)


def fill_policy(dialog: Any, **fields: str) -> None:
    labels = {
        "name": "Name",
        "source": "Source",
        "storage": "Storage location",
        "schedule": "Schedule (cron)",
        "timezone": "Time zone",
        "keep_last": "Keep last",
        "expire_after": "Expire after",
    }
    for key, value in fields.items():
        if key == "expire_after" and value:  # a number, and its unit from the list
            dialog.get_by_label(labels[key], exact=True).fill(value[:-1])
            dialog.get_by_label("Expire after unit").select_option(value[-1])
            continue
        dialog.get_by_label(labels[key], exact=True).fill(value)


def create_policy(page: Any, **fields: str) -> Any:
    from playwright.sync_api import expect

    page.get_by_role("button", name="Create policy").click()
    dialog = page.get_by_role("dialog", name="Create policy")
    fill_policy(dialog, **fields)
    dialog.get_by_role("button", name="Create policy").click()
    expect(dialog).to_be_hidden()
    policy = row(page, "policies", fields["name"])
    expect(policy).to_be_visible()
    return policy


def list_reads(page: Any, kind: str) -> list[str]:
    """Every read of a list endpoint from now on: live updates must not need any."""
    seen: list[str] = []
    pattern = re.compile(rf"/api/v1/{kind}(\?|$)")
    page.on("request", lambda r: seen.append(r.url) if r.method == "GET" and pattern.search(r.url) else None)
    return seen


def last_member_is_manifest(path: Path) -> dict[str, Any]:
    with tarfile.open(path) as tar:
        members = tar.getmembers()
        assert members[-1].name == "manifest.json", [m.name for m in members]
        manifest = json.load(tar.extractfile(members[-1]))  # type: ignore[arg-type]
    return manifest


# ---------------------------------------------------------------------------------- tests
def test_policy_snapshot_download_restore_and_event_log(browser: Any, server: Server) -> None:
    from playwright.sync_api import expect

    with console(browser, server.base) as page:
        expect(page.locator("#live-status")).to_have_text("Live")
        policy = create_policy(
            page,
            name="nightly",
            schedule="0 3 * * *",
            timezone="Europe/Lisbon",
            keep_last="7",
            expire_after="30d",
        )
        expect(policy).to_contain_text("active")
        expect(policy).to_contain_text("0 3 * * *")
        expect(policy).to_contain_text("Europe/Lisbon")
        expect(policy).to_contain_text("demo → local")
        expect(policy).to_contain_text("keep last 7, expire after 30d")
        expect(policy.locator("td").nth(3).locator("time")).to_have_count(1)  # next run

        # Take a Snapshot: the row appears and its bar reaches 100 % over the stream alone.
        reads = list_reads(page, "backups")
        policy.get_by_role("button", name="Take a Snapshot of nightly").click()
        backup = row(page, "backups", "nightly#1")
        expect(backup.locator("progress")).to_have_attribute("value", "100", timeout=20_000)
        expect(backup.locator(".badge")).to_have_text("completed")
        expect(backup).to_contain_text("100 %")
        expect(backup).to_contain_text("3,650")
        expect(backup).to_contain_text("KiB")
        assert reads == [], f"the console re-read the list instead of following the stream: {reads}"
        expect(policy.locator("td").nth(4).locator("time")).to_have_count(1)  # last success
        events = page.locator("#events-list > li")
        expect(events.first).to_contain_text("SnapshotCompleted")  # the Event Log follows too
        shot(page, "01-policies", "#policies")
        shot(page, "02-backup-records", "#backups")

        # The task log opens in its panel.
        backup.get_by_role("button", name=re.compile(r"^Task log ddt-backup-")).click()
        panel = page.get_by_role("region", name=re.compile(r"^Task log: ddt-backup-"))
        expect(panel).to_be_visible()
        expect(panel.locator("li").first).to_contain_text("SnapshotRequested")
        expect(panel.locator("li").last).to_contain_text("completed: 3650 items")
        shot(page, "03-task-log", "#task-log")
        panel.get_by_role("button", name="Close task log").click()
        expect(panel).to_be_hidden()

        # The archive downloads: a tar whose last member is manifest.json.
        link = backup.get_by_role("link", name=re.compile(r"^nightly-.*\.tar$"))
        with page.expect_download() as info:
            link.click()
        download = info.value
        assert download.suggested_filename == link.inner_text()
        manifest = last_member_is_manifest(Path(download.path()))
        assert sum(c["items"] for c in manifest["collections"].values()) == 3650

        # A restore asks for its target (default scratch) and its record completes.
        backup.get_by_role("button", name="Restore nightly#1").click()
        dialog = page.get_by_role("dialog", name="Restore nightly#1")
        expect(dialog.get_by_label("Restore target")).to_have_value("scratch")
        dialog.get_by_role("button", name="Start restore").click()
        expect(dialog).to_be_hidden()
        restore = row(page, "restores", re.compile(r"^nightly#1->scratch"))
        expect(restore.locator(".badge")).to_have_text("completed", timeout=20_000)
        expect(restore.locator("progress")).to_have_attribute("value", "100")
        expect(restore).to_contain_text("3/3 collections match")
        expect(restore).to_contain_text("nightly#1")
        shot(page, "04-restore-records", "#restores")

        # Global Event Log, newest first, each entry expandable to its raw JSON.
        expect(events.first).to_contain_text("RestoreCompleted")
        events.first.locator("summary").click()
        raw = events.first.locator("pre")
        expect(raw).to_be_visible()
        assert json.loads(raw.inner_text())["type"] == "RestoreCompleted"
        created = page.locator("#events-list > li", has_text="PolicyCreated")
        expect(created).to_contain_text("actor: console")  # X-Snapledger-Actor without a token
        shot(page, "05-event-log", "#events")

        # The policy's Event Log: its whole cycle, oldest at the bottom.
        policy.get_by_role("button", name="Event Log of nightly").click()
        expect(page.get_by_label("Show", exact=True)).to_have_value(policy.get_attribute("data-id"))
        expect(events.first).to_contain_text("RestoreCompleted")
        expect(events.last).to_contain_text("PolicyCreated")
        expect(page.locator("#events-list")).not_to_contain_text("PolicyNameClaimed")
        progressed = page.locator("#events-list > li", has_text="RestoreProgressed")
        expect(progressed.first).to_be_visible()
        page.get_by_label("Hide progress events").check()
        expect(progressed.first).to_be_hidden()

        # Update reads everything again; the records stay.
        page.get_by_role("button", name="Update").click()
        expect(page.locator("#announce")).to_have_text("Updated.")
        expect(backup.locator(".badge")).to_have_text("completed")
        expect(page.get_by_role("alert").filter(has_text=re.compile("."))).to_have_count(0)


def test_api_validation_messages_show_beside_the_field(browser: Any, server: Server) -> None:
    from playwright.sync_api import expect

    with console(browser, server.base) as page:
        # By keyboard: Enter opens the form on its first field, Escape closes it and focus
        # returns to the button, Enter in a field submits.
        create = page.get_by_role("button", name="Create policy")
        create.press("Enter")
        dialog = page.get_by_role("dialog", name="Create policy")
        expect(dialog.get_by_label("Name", exact=True)).to_be_focused()
        page.keyboard.press("Escape")
        expect(dialog).to_be_hidden()
        expect(create).to_be_focused()
        create.press("Enter")
        fill_policy(dialog, name="hourly", schedule="61 * * * *")
        schedule = dialog.get_by_label("Schedule (cron)")
        schedule.press("Enter")
        expect(dialog.get_by_role("alert")).to_contain_text("schedule: minute field '61' is outside 0-59")
        expect(schedule).to_have_attribute("aria-invalid", "true")
        expect(schedule).to_be_focused()
        expect(dialog.locator("#pf-schedule-error")).to_have_text(
            "schedule: minute field '61' is outside 0-59"
        )
        shot(page, "06-validation-error")

        schedule.fill("0 * * * *")
        dialog.get_by_role("button", name="Create policy").click()
        expect(dialog).to_be_hidden()
        policy = row(page, "policies", "hourly")
        expect(policy).to_contain_text("0 * * * *")

        # Edit: the form starts from the policy; a bad retention names retention.keep_last.
        policy.get_by_role("button", name="Edit hourly").click()
        edit = page.get_by_role("dialog", name="Edit policy hourly")
        expect(edit.get_by_label("Schedule (cron)")).to_have_value("0 * * * *")
        keep = edit.get_by_label("Keep last")
        keep.fill("0")
        edit.get_by_role("button", name="Save changes").click()
        expect(edit.get_by_role("alert")).to_contain_text("retention.keep_last")
        expect(keep).to_have_attribute("aria-invalid", "true")
        keep.fill("3")
        edit.get_by_label("Schedule (cron)").fill("@daily")
        edit.get_by_role("button", name="Save changes").click()
        expect(edit).to_be_hidden()
        expect(policy).to_contain_text("keep last 3")
        expect(policy).to_contain_text("@daily")


def test_rebuild_then_delete_a_snapshot_then_stop_the_policy(browser: Any, server: Server) -> None:
    from playwright.sync_api import expect

    with console(browser, server.base) as page:
        policy = create_policy(page, name="weekly", schedule="@weekly")
        policy.get_by_role("button", name="Rebuild weekly").click()
        page.get_by_role("dialog", name="Rebuild weekly?").get_by_role("button", name="Rebuild").click()
        backup = row(page, "backups", "weekly#1")
        expect(backup.locator(".badge")).to_have_text("completed", timeout=20_000)

        backup.get_by_role("button", name="Delete weekly#1").click()
        confirm = page.get_by_role("dialog", name="Delete weekly#1?")
        expect(confirm).to_contain_text("is removed from storage local")
        confirm.get_by_role("button", name="Delete snapshot").click()
        expect(confirm).to_be_hidden()
        expect(backup).to_have_count(0)

        policy.get_by_role("button", name="Stop weekly").click()
        expect(policy.locator(".badge")).to_have_text("stopped")
        expect(policy.get_by_role("button", name="Stop weekly")).to_have_count(0)
        expect(policy.locator("td").nth(3)).to_have_text("—")  # a stopped policy schedules nothing


def test_stop_a_running_snapshot(browser: Any, server: Server) -> None:
    from playwright.sync_api import expect

    with console(browser, server.base) as page:
        policy = create_policy(page, name="bulk", source="big")
        reads = list_reads(page, "backups")
        policy.get_by_role("button", name="Take a Snapshot of bulk").click()
        backup = row(page, "backups", "bulk#1")
        expect(backup.locator(".badge")).to_have_text("running", timeout=20_000)
        bar = backup.locator("progress")
        first = bar.get_attribute("value")
        # The bar moves while nobody clicks.
        expect(bar).not_to_have_attribute("value", first or "", timeout=20_000)
        expect(policy).to_contain_text("bulk#1 running")
        shot(page, "07-running-snapshot", "#policies")
        backup.get_by_role("button", name="Stop bulk#1").click()
        expect(backup.locator(".badge")).to_have_text("stopped", timeout=30_000)
        assert float(bar.get_attribute("value") or 0) < 100
        expect(backup.get_by_role("link")).to_have_count(0)  # no archive to download
        assert reads == [], reads
        shot(page, "08-stopped-snapshot", "#backups")


def test_delete_a_policy_keeping_its_archives(browser: Any, server: Server) -> None:
    from playwright.sync_api import expect

    api = f"{server.base}/api/v1"
    pid = httpx.post(f"{api}/policies", json={"name": "doomed", "source": "demo", "storage": "local"}).json()[
        "id"
    ]
    sid = httpx.post(f"{api}/policies/{pid}/snapshots").json()["id"]
    deadline = time.monotonic() + 20
    while httpx.get(f"{api}/backups/{sid}").json()["status"] != "completed":
        assert time.monotonic() < deadline
        time.sleep(0.1)
    archives = list((server.directory / ".snapledger" / "archives" / "doomed").glob("*.tar"))
    assert len(archives) == 1

    with console(browser, server.base) as page:
        policy = row(page, "policies", "doomed")
        policy.get_by_role("button", name="Delete doomed").click()
        dialog = page.get_by_role("dialog", name="Delete policy doomed?")
        expect(dialog.get_by_role("button", name="Cancel")).to_be_focused()  # the safe default
        dialog.get_by_label("Keep archive files").check()
        shot(page, "09-delete-dialog")
        with page.expect_request(lambda r: r.method == "DELETE") as request:
            dialog.get_by_role("button", name="Delete policy").click()
        assert request.value.url.endswith(f"/api/v1/policies/{pid}?keep_files=true")
        expect(dialog).to_be_hidden()
        expect(policy).to_have_count(0)
        expect(row(page, "backups", "doomed#1")).to_have_count(0)
        assert archives[0].exists()  # keep_files=true kept the archive

        page.get_by_label("Show deleted").check()
        expect(policy.locator(".badge")).to_have_text("deleted")
        expect(policy.get_by_role("button", name="Delete doomed")).to_have_count(0)


def test_without_the_stream_the_console_polls(browser: Any, server: Server) -> None:
    from playwright.sync_api import expect

    def no_stream(page: Any) -> None:
        page.route(re.compile(r"/api/v1/stream"), lambda route: route.abort())

    with console(browser, server.base, no_stream) as page:
        expect(page.locator("#live-status")).to_contain_text("polling")
        api = f"{server.base}/api/v1"
        r = httpx.post(f"{api}/policies", json={"name": "polled", "source": "demo", "storage": "local"})
        httpx.post(f"{api}/policies/{r.json()['id']}/snapshots")
        backup = row(page, "backups", "polled#1")
        expect(backup.locator(".badge")).to_have_text("completed", timeout=15_000)


def test_token_entry_when_the_api_answers_401(browser: Any, tmp_path: Path) -> None:
    from playwright.sync_api import expect

    config = '[[api.tokens]]\nname = "alice"\nrole = "operator"\ntoken_env = "SL_CONSOLE_TOKEN"\n'
    with serving(tmp_path, config, env={"SL_CONSOLE_TOKEN": TOKEN}) as base:
        # The console's own files are public (they hold no data), so a browser can load
        # the page and then ask for the token the API needs.
        assert httpx.get(f"{base}/js/main.js").status_code == 200
        assert httpx.get(f"{base}/api/v1/backups").status_code == 401

        def before(page: Any) -> None:
            pass

        with console(browser, base, before) as page:
            panel = page.get_by_role("region", name="API token required")
            expect(panel).to_be_visible()
            expect(page.get_by_role("region", name="Policies")).to_be_hidden()
            expect(panel).to_contain_text("401")
            token = panel.get_by_label("Bearer token")
            expect(token).to_be_focused()
            token.fill("not-the-token-0123456789")
            panel.get_by_role("button", name="Use token").click()
            expect(panel).to_contain_text("refused")
            shot(page, "10-token-entry")
            token.fill(TOKEN)
            panel.get_by_role("button", name="Use token").click()
            expect(panel).to_be_hidden()
            expect(page.get_by_role("region", name="Policies")).to_be_visible()
            expect(page.locator("#live-status")).to_have_text("Live")
            assert page.evaluate("sessionStorage.getItem('snapledger.token')") == TOKEN
            assert page.evaluate("localStorage.length") == 0

            reads = list_reads(page, "backups")
            policy = create_policy(page, name="secured")
            policy.get_by_role("button", name="Take a Snapshot of secured").click()
            backup = row(page, "backups", "secured#1")
            expect(backup.locator("progress")).to_have_attribute("value", "100", timeout=20_000)
            assert reads == [], reads  # the stream, read with fetch() and the token, brought it
            created = page.locator("#events-list > li", has_text="PolicyCreated")
            expect(created).to_contain_text("actor: alice")

            with page.expect_download() as info:
                backup.get_by_role("link", name=re.compile(r"^secured-.*\.tar$")).click()
            last_member_is_manifest(Path(info.value.path()))

            page.get_by_role("button", name="Forget token").click()
            expect(panel).to_be_visible()
            assert page.evaluate("sessionStorage.getItem('snapledger.token')") is None


def test_an_unverified_snapshot_asks_for_trust_before_it_restores(browser: Any, server: Server) -> None:
    """A snapshot imported without a signature: the restore dialog says why it is not
    trusted, and sends trust_unverified only when the operator ticks the box."""
    from playwright.sync_api import expect

    api = httpx.Client(base_url=server.base)
    pid = api.post(
        "/api/v1/policies", json={"name": "imported-ish", "source": "demo", "storage": "local"}
    ).json()["id"]
    sid = api.post(f"/api/v1/policies/{pid}/snapshots").json()["id"]
    wait_until(lambda: api.get(f"/api/v1/backups/{sid}").json()["status"] == "completed", 30, "the snapshot")

    def as_unverified(route: Any) -> None:
        answer = route.fetch()
        body = answer.json()
        for item in body.get("items", []):
            if item["id"] == sid:
                item.update(verification="unverified", trigger="import")
        route.fulfill(response=answer, json=body)

    def unverified_only(page: Any) -> None:  # the stream would bring the row as it really is
        page.route(re.compile(r"/api/v1/backups(\?|$)"), as_unverified)
        page.route(re.compile(r"/api/v1/stream"), lambda route: route.abort())

    sent: list[dict] = []
    with console(browser, server.base, before=unverified_only) as page:
        page.on(
            "request",
            lambda r: (
                sent.append(r.post_data_json) if r.method == "POST" and r.url.endswith("/restores") else None
            ),
        )
        backup = row(page, "backups", re.compile(r"^imported-ish#1$"))
        backup.get_by_role("button", name=re.compile(r"^Restore imported-ish#1")).click()
        dialog = page.get_by_role("dialog", name="Restore imported-ish#1")
        expect(dialog).to_contain_text("without a signature")
        box = dialog.get_by_label("Restore it anyway: I know where this archive comes from")
        expect(box).to_be_visible()
        expect(box).not_to_be_checked()
        box.check()
        dialog.get_by_role("button", name="Start restore").click()
        expect(dialog).to_be_hidden()
    assert sent and sent[-1]["trust_unverified"] is True and sent[-1]["snapshot_id"] == sid


def test_a_mutation_answered_503_is_sent_again_under_its_key(browser: Any, server: Server) -> None:
    """The API commits a Take a Snapshot but the browser is told 503: the console sends it
    again under the same Idempotency-Key, and the policy has one snapshot, not two."""
    from playwright.sync_api import expect

    api = httpx.Client(base_url=server.base)
    pid = api.post("/api/v1/policies", json={"name": "retried", "source": "demo", "storage": "local"}).json()[
        "id"
    ]
    keys: list[str] = []

    def answer_lost(route: Any) -> None:
        keys.append(route.request.headers.get("idempotency-key", ""))
        answer = route.fetch()  # the server acts
        if len(keys) == 1:  # ...and its first answer is lost to an outage
            route.fulfill(
                status=503, headers={"Retry-After": "1"}, json={"error": "unavailable", "field": None}
            )
        else:
            route.fulfill(response=answer)

    with console(
        browser,
        server.base,
        before=lambda p: p.route(re.compile(rf"/api/v1/policies/{pid}/snapshots$"), answer_lost),
    ) as page:
        policy = row(page, "policies", "retried")
        policy.get_by_role("button", name="Take a Snapshot of retried").click()
        expect(row(page, "backups", re.compile(r"^retried#1$"))).to_be_visible()
        for _ in range(150):  # the retry follows Retry-After
            if len(keys) >= 2:
                break
            page.wait_for_timeout(100)
    assert len(keys) == 2 and keys[0] and keys[0] == keys[1], keys
    snapshots = api.get("/api/v1/backups", params={"policy_id": pid}).json()["items"]
    assert len(snapshots) == 1, snapshots


def test_load_more_keeps_the_keyboard_on_its_button(browser: Any, tmp_path: Path) -> None:
    """The handler focused `e.currentTarget` after awaiting the page, when it is null: each
    press threw (a page error) instead of keeping focus where the operator pressed."""
    from playwright.sync_api import expect

    with serving(tmp_path) as base:
        with httpx.Client(base_url=f"{base}/api/v1", timeout=30) as api:
            for n in range(201):  # three pages of 100
                body = {"name": f"p{n:03d}", "source": "demo", "storage": "local"}
                assert api.post("/policies", json=body).status_code == 201
        with console(browser, base) as page:
            rows = page.locator("#policies-table tbody tr")
            expect(rows).to_have_count(100)
            more = page.get_by_role("button", name="Load more policies")
            more.focus()
            page.keyboard.press("Enter")
            expect(rows).to_have_count(200)
            expect(more).to_be_focused()  # a third page remains: the button stays, and focus on it
            page.keyboard.press("Enter")
            expect(rows).to_have_count(201)
            expect(more).to_be_hidden()
