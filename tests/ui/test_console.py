"""The web console in a real browser (Debian's Chromium via Playwright) against the shared
daemon and a real busybox container: sign-in, node and container views, console in and
out, power buttons, uploads, headers, and that the page talks to nobody but lightd."""

from __future__ import annotations

import re
from pathlib import Path

import httpx
import pytest

from tests.support.daemon import DaemonProcess, wait_for
from tests.support.lab import Lab
from tests.ui.conftest import Console, new_console

sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
expect = sync_api.expect
Browser = sync_api.Browser

# Coloured and numbered lines, then an echo loop on stdin (as in test_websockets).
NUMBERED = 12
NO_VALUE = "\u2013"  # what the page shows before a first stats sample
STARTUP = (
    "printf '\\033[31mred alert\\033[0m and \\033[1;92mbold green\\033[0m\\n'; "
    + "; ".join(f"echo 'line {i:02d}'" for i in range(1, NUMBERED + 1))
    + "; echo 'Done!'; while read line; do echo \"got: $line\"; done"
)


def running(lab: Lab, name: str = "ui", **changes: object) -> str:
    cid = lab.create(name, startup_command=STARTUP, start_pattern="Done", **changes)
    lab.wait_state(cid, "running")
    return cid


def test_headers_and_public_files(daemon: DaemonProcess) -> None:
    with httpx.Client(base_url=daemon.base_url, timeout=10) as plain:
        bare = plain.get("/ui")
        assert bare.status_code == 308
        assert bare.headers["location"] == "/ui/"
        page = plain.get("/ui/")
        assert page.status_code == 200
        assert page.headers["content-type"].startswith("text/html")
        assert '<script type="module" src="app.js">' in page.text
        csp = page.headers["content-security-policy"]
        assert "default-src 'self'" in csp
        assert "script-src 'self';" in csp and "unsafe-inline" not in csp
        assert f"ws://127.0.0.1:{daemon.port}" in csp
        assert "frame-ancestors 'none'" in csp
        assert page.headers["x-content-type-options"] == "nosniff"
        assert page.headers["x-frame-options"] == "DENY"
        assert page.headers["referrer-policy"] == "no-referrer"
        script = plain.get("/ui/app.js")
        assert script.status_code == 200
        assert script.headers["content-type"].startswith("text/javascript")
        assert (
            plain.get("/ui/app.js", headers={"If-None-Match": script.headers["etag"]}).status_code
            == 304
        )
        assert plain.get("/ui/style.css").headers["content-type"].startswith("text/css")
        for missing in (
            "/ui/nope.js",
            "/ui/..%2Fpyproject.toml",
            "/ui/__init__.py",
            "/ui/%2e%2e/x",
        ):
            answer = plain.get(missing)
            assert answer.status_code == 404, missing
            assert answer.json() == {"error": "Not found"}
        # The page is public; the API behind it is not.
        assert plain.get("/system").status_code == 401
        hostile = plain.get("/ui/", headers={"Host": 'evil"; script-src *'})
        assert "evil" not in hostile.headers["content-security-policy"]


def test_wrong_token_is_refused(console: Console) -> None:
    console.sign_in("lightd_" + "00" * 16)
    alert = console.page.get_by_role("alert")
    expect(alert).to_contain_text("This token was refused")
    assert console.page.evaluate("sessionStorage.length") == 0
    expect(console.page.get_by_role("button", name="Sign out")).to_be_hidden()
    console.shot("signin-refused")
    # The refused REST call is the one error Chromium logs for this page.
    assert all("401" in error for error in console.recorded.errors), console.recorded.errors
    assert console.recorded.foreign() == []


def test_node_container_and_files_views(console: Console, lab: Lab, tmp_path: Path) -> None:
    port = lab.pool_port()
    cid = running(lab, ports=[port])
    page = console.page
    console.sign_in()
    # Node view: the container, live from /watch, with its state and port pool.
    row = page.locator(f"tr[data-id='{cid}']")
    expect(row).to_be_visible()
    expect(row.locator("td[data-label='State'] .badge")).to_have_text("running")
    expect(row.locator("td[data-label='Install'] .badge")).to_have_text("ready")
    expect(page.get_by_text("reachable", exact=False).first).to_be_visible()
    expect(row.locator("td[data-label='Ports']")).to_have_text(f"127.0.0.1:{port['port']}/tcp")
    pool = page.locator("table.pool")
    expect(pool.locator("tr", has_text=str(port["port"]))).to_contain_text("bound")
    expect(row.locator("td[data-label='CPU'] .num")).not_to_have_text(NO_VALUE, timeout=15_000)
    page.wait_for_timeout(3000)  # a few stats samples for the sparklines of the screenshot
    console.shot("node")

    # Container view: replayed lines in order, colours, a command and its echo.
    row.get_by_role("link", name=cid).click()
    expect(page).to_have_url(re.compile(f"#/c/{cid}$"))
    out = page.get_by_role("log", name="Console output")
    expect(out).to_contain_text("line 12")
    text = out.inner_text()
    positions = [text.index(f"line {i:02d}") for i in range(1, NUMBERED + 1)]
    assert positions == sorted(positions), text
    red = out.locator("span.fg-1")
    expect(red).to_have_text("red alert")
    expect(out.locator("span.fg-10.bold")).to_have_text("bold green")
    assert "\x1b" not in text and "[31m" not in text

    command = page.get_by_label("Command")
    command.fill("hello from the page")
    command.press("Enter")
    expect(out).to_contain_text("got: hello from the page")
    command.fill("second <b>not bold</b>")
    command.press("Enter")
    expect(out).to_contain_text("got: second <b>not bold</b>")
    assert out.locator("b").count() == 0
    command.press("ArrowUp")
    expect(command).to_have_value("second <b>not bold</b>")
    command.press("ArrowUp")
    expect(command).to_have_value("hello from the page")
    command.press("ArrowDown")
    command.press("ArrowDown")
    expect(command).to_have_value("")

    # Power buttons follow the real state.
    start = page.get_by_role("button", name="Start", exact=True)
    kill = page.get_by_role("button", name="Kill", exact=True)
    state = page.locator(".head .title .badge").first
    expect(start).to_be_disabled()
    expect(kill).to_be_enabled()
    expect(page.get_by_text("CPU").first).to_be_visible()
    expect(page.locator("[data-ref='cpuNow']")).not_to_have_text(NO_VALUE, timeout=15_000)
    page.wait_for_timeout(3000)  # a few stats samples for the charts of the screenshot
    console.shot("container")
    kill.click()
    expect(state).to_have_text("offline")
    expect(start).to_be_enabled()
    expect(kill).to_be_disabled()
    assert lab.get(cid)["state"] == "offline"
    start.click()
    expect(state).to_have_text("running", timeout=20_000)
    expect(kill).to_be_enabled()
    expect(start).to_be_disabled()
    lab.wait_state(cid, "running")

    # Files view: uploads through the file input and by drag and drop land on disk.
    page.get_by_role("link", name="Files").click()
    expect(page.get_by_role("heading", name="Files")).to_be_visible()
    volume = Path(lab.volume_path(lab.get(cid)["volume_id"]))
    payload = bytes(range(256)) * 300
    picked = tmp_path / "picked.bin"
    picked.write_bytes(payload)
    page.locator("input[type=file]").set_input_files(str(picked))
    expect(page.locator("tr[data-name='picked.bin']")).to_be_visible()
    wait_for(lambda: (volume / "picked.bin").is_file(), what="picked.bin on disk")
    assert (volume / "picked.bin").read_bytes() == payload

    dropped = page.evaluate_handle(
        """() => {
            const data = new DataTransfer();
            const bytes = new Uint8Array(5000).map((_, i) => (i * 7) % 251);
            data.items.add(new File([bytes], "dropped.dat"));
            return data;
        }"""
    )
    page.locator("[data-ref='drop']").dispatch_event("drop", {"dataTransfer": dropped})
    expect(page.locator("tr[data-name='dropped.dat']")).to_be_visible()
    assert (volume / "dropped.dat").read_bytes() == bytes((i * 7) % 251 for i in range(5000))

    assert console.recorded.errors == []
    # An API error is shown as the daemon words it (Chromium logs the refused call).
    page.get_by_role("button", name="New folder").click()
    page.get_by_label("Folder name").fill("../../escape")
    page.get_by_role("button", name="Create").click()
    expect(page.locator(".files-view .alert.error")).to_have_text(
        "Invalid path: path traversal detected"
    )
    console.shot("files")

    # Sign-out forgets the token.
    page.get_by_role("button", name="Sign out").click()
    expect(page.get_by_label("Token")).to_be_visible()
    assert page.evaluate("sessionStorage.length") == 0

    assert console.recorded.errors == [
        "Failed to load resource: the server responded with a status of 400 ()"
    ]
    assert console.recorded.foreign() == []
    assert any(
        url.startswith(f"ws://127.0.0.1:{console.daemon.port}/watch")
        for url in console.recorded.requests
    )


WIDEST = """() => [...document.querySelectorAll('body *')]
    .filter((e) => e.getBoundingClientRect().right > 390)
    .map((e) => `${e.tagName}.${e.className} ${Math.round(e.getBoundingClientRect().right)}`)
    .slice(0, 8)"""


def test_phone_width_and_keyboard(browser: Browser, daemon: DaemonProcess, lab: Lab) -> None:
    cid = running(lab, "phone")
    for phone in new_console(browser, daemon, viewport={"width": 390, "height": 844}):
        page = phone.page
        phone.open()
        # Keyboard only: type the token, Enter signs in.
        token = page.get_by_label("Token")
        expect(token).to_be_focused()
        page.keyboard.type(daemon.token)
        page.keyboard.press("Enter")
        expect(page.locator(f"tr[data-id='{cid}']")).to_be_visible()
        wide = page.evaluate(WIDEST)
        assert page.evaluate("document.documentElement.scrollWidth") <= 390, wide
        phone.shot("phone-node")
        page.locator(f"tr[data-id='{cid}'] a").focus()
        page.keyboard.press("Enter")
        out = page.get_by_role("log", name="Console output")
        expect(out).to_contain_text("line 12")
        page.get_by_label("Command").focus()
        page.keyboard.type("typed on a phone")
        page.keyboard.press("Enter")
        expect(out).to_contain_text("got: typed on a phone")
        assert page.evaluate("document.documentElement.scrollWidth") <= 390
        phone.shot("phone-container")
        assert phone.recorded.errors == []
        assert phone.recorded.foreign() == []


def test_minted_token_opens_its_container_only(console: Console, lab: Lab) -> None:
    cid = running(lab, "minted")
    minted = lab.api.post("/auth/tokens", json={"ttl": "10m", "container": cid})
    assert minted.status_code == 200, minted.text
    token = minted.json()["token"]
    try:
        signed_in_with_minted(console, cid, token)
    finally:
        lab.api.delete(f"/auth/tokens/{token}")


def signed_in_with_minted(console: Console, cid: str, token: str) -> None:
    page = console.page
    console.open()
    page.get_by_label("Token").fill(token)
    page.get_by_text("A minted token for one container").click()
    page.get_by_label("Container id").fill(cid)
    page.get_by_role("button", name="Sign in").click()
    expect(page).to_have_url(re.compile(f"#/c/{cid}$"))
    out = page.get_by_role("log", name="Console output")
    expect(out).to_contain_text("line 12")
    command = page.get_by_label("Command")
    command.fill("scoped hello")
    command.press("Enter")
    expect(out).to_contain_text("got: scoped hello")
    expect(page.get_by_role("link", name="Files")).to_be_hidden()
    # The node view needs the master token: the page stays on the container.
    console.open("#/")
    expect(page).to_have_url(re.compile(f"#/c/{cid}$"))
    expect(out).to_be_visible()
    assert console.recorded.errors == []
    assert console.recorded.foreign() == []


def test_files_edit_rename_archive_download_delete(console: Console, lab: Lab) -> None:
    cid = lab.create("files", power="stopped")
    volume = Path(lab.volume_path(lab.get(cid)["volume_id"]))
    (volume / "config").mkdir()
    (volume / "config" / "server.properties").write_text("max-players=20\n")
    page = console.page
    console.sign_in()
    expect(page.locator(f"tr[data-id='{cid}']")).to_be_visible()
    console.open(f"#/c/{cid}/files")
    rows = page.locator("table.files tbody")
    page.get_by_role("button", name="config/").click()
    expect(page.locator("nav.path")).to_contain_text("config")

    # Edit a small text file.
    rows.get_by_role("button", name="server.properties").click()
    editor = page.get_by_label("File content")
    expect(editor).to_have_value("max-players=20\n")
    editor.fill("max-players=64\nmotd=from the page\n")
    page.get_by_role("button", name="Save").click()
    wait_for(
        lambda: (
            (volume / "config/server.properties").read_text()
            == "max-players=64\nmotd=from the page\n"
        ),
        what="saved file",
    )
    page.get_by_role("button", name="Close").click()

    # Download it.
    with page.expect_download() as download:
        page.locator("tr[data-name='server.properties']").get_by_role(
            "button", name="Download"
        ).click()
    assert Path(download.value.path()).read_text() == "max-players=64\nmotd=from the page\n"

    # Rename it.
    page.locator("tr[data-name='server.properties']").get_by_role("button", name="Rename").click()
    page.get_by_label("New name or path").fill("game.properties")
    page.get_by_role("button", name="Rename", exact=True).last.click()
    expect(page.locator("tr[data-name='game.properties']")).to_be_visible()
    assert (volume / "config/game.properties").is_file()
    assert not (volume / "config/server.properties").exists()

    # Compress the folder from the root, extract the archive elsewhere.
    page.get_by_role("button", name="Up", exact=True).click()
    page.locator("tr[data-name='config'] input[type=checkbox]").check()
    page.get_by_role("button", name="Compress selected").click()
    page.get_by_label("Archive name").fill("backup")
    page.get_by_role("button", name="Compress", exact=True).click()
    expect(page.locator("tr[data-name='backup.tar.gz']")).to_be_visible()
    page.locator("tr[data-name='backup.tar.gz']").get_by_role("button", name="Extract").click()
    page.get_by_label("Into folder").fill("restored")
    page.get_by_role("button", name="Extract", exact=True).last.click()
    expect(page.locator("tr[data-name='restored']")).to_be_visible()
    assert (volume / "restored/config/game.properties").read_text().startswith("max-players=64")

    # Delete the archive, after confirming.
    page.locator("tr[data-name='backup.tar.gz']").get_by_role("button", name="Delete").click()
    page.get_by_role("dialog").get_by_role("button", name="Delete").click()
    expect(page.locator("tr[data-name='backup.tar.gz']")).to_have_count(0)
    assert not (volume / "backup.tar.gz").exists()
    console.shot("files-actions")
    assert console.recorded.errors == []
    assert console.recorded.foreign() == []
