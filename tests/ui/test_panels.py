"""The container view's Backups and SFTP panels in a real browser (Debian's Chromium via
Playwright) against the shared daemon: a backup made through the page goes running ->
done live, its download is the API's bytes, a truncating restore brings a changed volume
back, deletion; SFTP credentials made through the page log a real client in, revocation
locks it out; phone width and keyboard; and the page talks to nobody but lightd."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import re
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncssh
import httpx
import pytest

from tests.sftp.conftest import session
from tests.support.daemon import DaemonProcess, wait_for
from tests.support.lab import Lab
from tests.ui.conftest import ARTIFACTS, Console, new_console
from tests.ui.test_console import WIDEST, running

sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
expect = sync_api.expect
Browser = sync_api.Browser

# Records every state a backup row of the page shows, as the page shows it.
RECORD_STATES = """() => {
    window.__states = [];
    const rows = document.querySelector("[data-ref='backupRows']");
    const seen = () => {
        for (const row of rows.querySelectorAll("tr[data-id]")) {
            const last = window.__states[window.__states.length - 1];
            const bar = row.querySelector("progress") ? "bar" : "";
            const now = `${row.dataset.id}:${row.dataset.state}:${bar}`;
            if (now !== last) window.__states.push(now);
        }
    };
    new MutationObserver(seen).observe(rows, {childList: true, subtree: true, attributes: true});
}"""


def volume_of(lab: Lab, cid: str) -> tuple[str, Path]:
    volume_id = lab.get(cid)["volume_id"]
    return volume_id, Path(lab.volume_path(volume_id))


@dataclass
class Tidy:
    """What a test made besides containers: removed after it, whatever happened."""

    volumes: list[str] = field(default_factory=list)  # their backups, then themselves
    sftp: list[str] = field(default_factory=list)  # containers with credentials


@pytest.fixture
def tidy(lab: Lab, api: httpx.Client) -> Iterator[Tidy]:
    made = Tidy()
    yield made
    for cid in made.sftp:
        api.delete(f"/containers/{cid}/sftp/credentials")  # 404 when already revoked
    for volume_id in made.volumes:
        with contextlib.suppress(AssertionError):
            wait_backups_idle(api, volume_id)
        listed = api.get(f"/volumes/{volume_id}/backups")
        for backup in listed.json()["backups"] if listed.status_code == 200 else []:
            api.delete(f"/volumes/{volume_id}/backups/{backup['backup_id']}")
    lab.cleanup()  # the containers first: a volume in use is not deleted
    for volume_id in made.volumes:
        api.delete(f"/volumes/{volume_id}")


def wait_backups_idle(api: httpx.Client, volume_id: str) -> list[dict[str, Any]]:
    def idle() -> tuple[list[dict[str, Any]]] | None:
        backups: list[dict[str, Any]] = api.get(f"/volumes/{volume_id}/backups").json()["backups"]
        busy = any(
            b["state"] == "running" or (b["restore"] or {}).get("state") == "running"
            for b in backups
        )
        return None if busy else (backups,)  # a tuple: an empty list is an answer too

    answer: tuple[list[dict[str, Any]]] = wait_for(idle, timeout=90, what="backups to end")
    return answer[0]


def test_backup_create_download_restore_delete(
    console: Console,
    lab: Lab,
    api: httpx.Client,
    tidy: Tidy,
) -> None:
    cid = lab.create("bk", power="stopped")
    volume_id, volume = volume_of(lab, cid)
    tidy.volumes.append(volume_id)
    (volume / "world").mkdir()
    # Random bytes (gzip cannot shrink them): big enough for a progress report or two.
    (volume / "world" / "region.bin").write_bytes(os.urandom(24 * 1024 * 1024))
    (volume / "server.properties").write_text("max-players=20\n")
    page = console.page
    console.sign_in()
    expect(page.locator(f"tr[data-id='{cid}']")).to_be_visible()
    console.open(f"#/c/{cid}")
    panel = page.locator("section.backups")
    expect(panel.get_by_text(f"volume {volume_id}")).to_be_visible()
    expect(panel.get_by_text("No backups of this volume yet.")).to_be_visible()
    adapters = panel.get_by_label("Adapter").locator("option").all_inner_texts()
    offered = api.get("/system").json()["backups"]["adapters"]
    assert adapters == offered and adapters[0] == "archive"

    # Create one through the page: the row goes running -> done from /watch, live.
    page.evaluate(RECORD_STATES)
    panel.get_by_label("Adapter").select_option("archive")
    panel.get_by_label("Name").fill("before the update")
    panel.get_by_role("button", name="Create backup").click()
    row = panel.locator("tbody tr").first
    expect(row.locator("td[data-label='Name']")).to_contain_text("before the update")
    if row.get_attribute("data-state") == "running":  # usually: 24 MiB take a moment
        console.shot("backup-running")
    expect(row).to_have_attribute("data-state", "done", timeout=60_000)
    backup_id = row.get_attribute("data-id")
    assert backup_id
    states = [s.split(":", 1)[1] for s in page.evaluate("window.__states")]
    assert states[0].startswith("running"), states
    assert states[-1] == "done:", states
    assert "running:bar" in states, states  # a progress bar while it ran
    record = api.get(f"/volumes/{volume_id}/backups/{backup_id}").json()
    assert record["state"] == "done" and record["adapter"] == "archive"
    expect(row.locator("td[data-label='Adapter']")).to_have_text("archive")
    expect(row.locator("td[data-label='Size']")).not_to_have_text("\u2013")
    console.shot("backups-done")

    # Download it through the page (fetched with the token, saved from a Blob URL).
    with page.expect_download() as download:
        row.get_by_role("button", name="Download").click()
    assert download.value.suggested_filename == "before the update.tar.gz"
    downloaded = Path(download.value.path()).read_bytes()
    direct = api.get(f"/volumes/{volume_id}/backups/{backup_id}/download")
    assert direct.status_code == 200
    assert hashlib.sha256(downloaded).digest() == hashlib.sha256(direct.content).digest()
    assert hashlib.sha256(downloaded).hexdigest() == record["checksum"]

    # Change the volume, restore with truncate through the page: it is the backup again.
    (volume / "server.properties").write_text("max-players=99\n")
    (volume / "stray.txt").write_text("not in the backup\n")
    row.get_by_role("button", name="Restore").click()
    dialog = page.get_by_role("dialog")
    expect(dialog).to_contain_text("Restore before the update?")
    dialog.get_by_label("Truncate", exact=False).check()
    dialog.get_by_role("button", name="Restore").click()
    expect(row).to_have_attribute("data-restore", "done", timeout=60_000)
    expect(row.locator("td[data-label='State']")).to_contain_text("restore done (truncate)")
    assert (volume / "server.properties").read_text() == "max-players=20\n"
    assert not (volume / "stray.txt").exists()
    assert (volume / "world" / "region.bin").stat().st_size == 24 * 1024 * 1024
    restored = api.get(f"/volumes/{volume_id}/backups/{backup_id}").json()["restore"]
    assert restored["state"] == "done" and restored["truncate"] is True

    # An API error is shown verbatim: a second backup under a name the API refuses.
    name = panel.get_by_label("Name")
    name.evaluate("(input) => { input.maxLength = 400; }")  # past the page's own limit
    name.fill("x" * 256)
    panel.get_by_role("button", name="Create backup").click()
    error = panel.locator(".alert.error")
    expect(error).to_be_visible()
    refused = api.post(f"/volumes/{volume_id}/backups", json={"name": "x" * 256})
    assert refused.status_code == 400
    expect(error).to_have_text(refused.json()["error"])
    panel.get_by_label("Name").fill("")

    # Delete it through the page, after confirming.
    row.get_by_role("button", name="Delete").click()
    page.get_by_role("dialog").get_by_role("button", name="Delete").click()
    expect(panel.locator(f"tr[data-id='{backup_id}']")).to_have_count(0)
    expect(panel.get_by_text("No backups of this volume yet.")).to_be_visible()
    assert api.get(f"/volumes/{volume_id}/backups/{backup_id}").status_code == 404

    # The refused POST is the one error Chromium logs for this page.
    assert len(console.recorded.errors) == 1, console.recorded.errors
    assert "status of 400" in console.recorded.errors[0], console.recorded.errors
    assert console.recorded.foreign() == []


def list_root(port: int, username: str, password: str) -> list[str]:
    """The volume's root as a real SFTP client (asyncssh) lists it, logged in by password.

    In a thread of its own: Playwright's sync API keeps an event loop in this one.
    """

    async def listing() -> list[str]:
        async with session(port, username, password) as sftp:
            return sorted(set(await sftp.listdir("/")) - {".", ".."})

    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, listing()).result(timeout=60)


def test_sftp_credentials_through_the_page(
    console: Console,
    lab: Lab,
    api: httpx.Client,
    daemon: DaemonProcess,
    tidy: Tidy,
) -> None:
    assert daemon.sftp_port, "the shared daemon must run SFTP"
    cid = lab.create("sftpui", power="stopped")
    volume_id, volume = volume_of(lab, cid)
    tidy.sftp.append(cid)
    tidy.volumes.append(volume_id)
    (volume / "hello.txt").write_text("hi\n")
    page = console.page
    console.sign_in()
    expect(page.locator(f"tr[data-id='{cid}']")).to_be_visible()
    console.open(f"#/c/{cid}")
    panel = page.locator("section.sftp")
    expect(panel.get_by_text("No credentials yet")).to_be_visible()

    # Create: no username, no password -> lightd generates one, shown once.
    panel.get_by_role("group", name="Permissions").get_by_label("delete").uncheck()
    panel.get_by_role("button", name="Create credentials").click()
    secret = panel.locator("[data-ref='secretValue']")
    expect(secret).to_have_text(re.compile(r"^\S{24}$"))
    expect(panel.get_by_text("It is not shown again")).to_be_visible()
    password = secret.inner_text()
    expect(panel.get_by_role("button", name="Copy")).to_be_focused()
    info = api.get(f"/containers/{cid}/sftp/info").json()
    assert info["username"] == cid
    assert info["permissions"] == ["read", "write"]
    system = api.get("/system").json()["sftp"]
    expect(panel.locator("[data-ref='sftpUrl']")).to_have_text(
        f"sftp://{cid}@127.0.0.1:{daemon.sftp_port}"
    )
    expect(panel.locator("[data-ref='sftpFingerprint']")).to_have_text(
        system["host_key_fingerprint"]
    )
    expect(panel.locator("[data-ref='sftpPath']")).to_have_text("/home/container")
    expect(panel.locator("[data-ref='sftpPerms']")).to_have_text("read, write")
    expect(panel.get_by_role("button", name="Replace credentials")).to_be_visible()
    console.shot("sftp-created")

    # A real SFTP client logs in with the page's password and lists the volume.
    assert list_root(daemon.sftp_port, cid, password) == ["hello.txt"]

    # The password is gone once dismissed, and after a reload it is never shown again.
    panel.get_by_role("button", name="Done").click()
    expect(secret).to_be_hidden()
    page.reload()
    expect(panel.locator("[data-ref='sftpUser']")).to_have_text(cid)
    assert password not in page.content()

    # Revoke through the page: the login stops working.
    panel.get_by_role("button", name="Revoke").click()
    page.get_by_role("dialog").get_by_role("button", name="Revoke").click()
    expect(panel.get_by_text("No credentials yet")).to_be_visible()
    assert api.get(f"/containers/{cid}/sftp/info").status_code == 404
    with pytest.raises(asyncssh.PermissionDenied):
        list_root(daemon.sftp_port, cid, password)

    # An API error is shown verbatim: a public key that is not one.
    panel.get_by_label("Public keys").fill("not a key")
    panel.get_by_role("button", name="Create credentials").click()
    refused = api.post(f"/containers/{cid}/sftp/credentials", json={"public_keys": ["not a key"]})
    assert refused.status_code == 400
    expect(panel.locator(".alert.error")).to_have_text(refused.json()["error"])
    assert api.get(f"/containers/{cid}/sftp/info").status_code == 404

    # Besides the 404s of GET .../sftp/info ("none yet", before creation and after
    # revocation), the refused POST is the one error Chromium logs.
    assert len(console.recorded.no_credentials) >= 2, console.recorded.no_credentials
    assert len(console.recorded.errors) == 1, console.recorded.errors
    assert "status of 400" in console.recorded.errors[0], console.recorded.errors
    assert console.recorded.foreign() == []


def test_panels_at_phone_width_by_keyboard(
    browser: Browser,
    daemon: DaemonProcess,
    lab: Lab,
    api: httpx.Client,
    tidy: Tidy,
) -> None:
    cid = running(lab, "panels")
    volume_id, volume = volume_of(lab, cid)
    tidy.volumes.append(volume_id)
    tidy.sftp.append(cid)
    (volume / "server.properties").write_text("max-players=20\n")
    made = api.post(f"/volumes/{volume_id}/backups", json={"name": "nightly"})
    assert made.status_code == 202, made.text
    wait_backups_idle(api, volume_id)
    issued = api.post(f"/containers/{cid}/sftp/credentials", json={"password": "s3cret-pass"})
    assert issued.status_code == 200, issued.text

    # Wide: the whole container view with both panels filled (the README's picture).
    for wide in new_console(browser, daemon):
        wide.sign_in()
        expect(wide.page.locator(f"tr[data-id='{cid}']")).to_be_visible()
        wide.open(f"#/c/{cid}")
        expect(wide.page.get_by_role("log", name="Console output")).to_contain_text("line 12")
        expect(wide.page.locator("section.backups tbody tr")).to_have_count(1)
        expect(wide.page.locator("[data-ref='sftpUser']")).to_have_text(cid)
        expect(wide.page.locator("[data-ref='cpuNow']")).not_to_have_text("\u2013", timeout=15_000)
        wide.page.wait_for_timeout(3000)  # a few stats samples for the charts
        wide.shot("container-panels")
        assert wide.recorded.errors == []
        assert wide.recorded.foreign() == []

    for phone in new_console(browser, daemon, viewport={"width": 390, "height": 844}):
        page = phone.page
        phone.open()
        page.keyboard.type(daemon.token)
        page.keyboard.press("Enter")
        expect(page.locator(f"tr[data-id='{cid}']")).to_be_visible()
        page.locator(f"tr[data-id='{cid}'] a").focus()
        page.keyboard.press("Enter")
        backups = page.locator("section.backups")
        expect(backups.locator("tbody tr")).to_have_count(1)
        expect(page.locator("[data-ref='sftpUser']")).to_have_text(cid)
        # Keyboard only: adapter, Tab to the name, type, Enter starts a backup.
        backups.get_by_label("Adapter").focus()
        page.keyboard.press("Tab")
        expect(backups.get_by_label("Name")).to_be_focused()
        page.keyboard.type("typed on a phone")
        page.keyboard.press("Enter")
        expect(backups.locator("tbody tr")).to_have_count(2)
        first = backups.locator("tbody tr").first
        expect(first).to_contain_text("typed on a phone")
        expect(first).to_have_attribute("data-state", "done", timeout=60_000)
        # Tab reaches the row's buttons; Enter on Delete opens the dialog, Escape cancels.
        first.get_by_role("button", name="Restore").focus()
        page.keyboard.press("Tab")
        expect(first.get_by_role("button", name="Delete")).to_be_focused()
        page.keyboard.press("Enter")
        expect(page.get_by_role("dialog")).to_be_visible()
        page.keyboard.press("Escape")
        expect(page.get_by_role("dialog")).to_be_hidden()
        # The SFTP form: Tab from the username to the password field.
        page.get_by_label("Username").focus()
        page.keyboard.press("Tab")
        expect(page.get_by_label("Password")).to_be_focused()
        wide_parts = page.evaluate(WIDEST)
        assert page.evaluate("document.documentElement.scrollWidth") <= 390, wide_parts
        page.evaluate("window.scrollTo(0, 0)")
        phone.shot("phone-panels")
        for name in ("backups", "sftp"):
            page.locator(f"section.{name}").screenshot(path=str(ARTIFACTS / f"phone-{name}.png"))
        assert phone.recorded.errors == []
        assert phone.recorded.foreign() == []
    wait_backups_idle(api, volume_id)
