"""Bodies and messages that are not UTF-8 JSON are refused cleanly on every route.

Every operation of ``/openapi.json`` that takes a JSON body is sent bodies in UTF-16
(with and without a byte order mark), UTF-32, Latin-1, invalid UTF-8, CESU-8 and
escaped lone surrogates, and a UTF-8 byte order mark: each must be 400 ``Malformed JSON
body`` with nothing logged as a traceback. The same holds on error paths (an unknown
volume, a body over the limit) and for WebSocket messages. Names that are not UTF-8
on disk (a container may make any bytes) are listed and archived without a 5xx.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.daemon import DaemonProcess
from tests.support.lab import Lab
from tests.support.ws import Watcher

MALFORMED = {"error": "Malformed JSON body"}
SAMPLE = '{"path": "caf\u00e9.txt", "content": "x", "ttl": "1h"}'

BAD_BODIES = [
    pytest.param(SAMPLE.encode("utf-16"), id="utf-16 with a byte order mark"),
    pytest.param(SAMPLE.encode("utf-16-le"), id="utf-16 little endian without a mark"),
    pytest.param(SAMPLE.encode("utf-16-be"), id="utf-16 big endian without a mark"),
    pytest.param(SAMPLE.encode("utf-32"), id="utf-32"),
    pytest.param(SAMPLE.encode("latin-1"), id="latin-1 bytes"),
    pytest.param(b'{"path": "\xff\xfe"}', id="invalid utf-8 bytes"),
    pytest.param(b'{"path": "\xed\xa0\x80"}', id="an encoded lone surrogate"),
    pytest.param(b'{"path": "\\ud800"}', id="an escaped lone surrogate"),
    pytest.param(b'{"path": "\\udc00x"}', id="an escaped lone low surrogate"),
    pytest.param(b"\xef\xbb\xbf" + SAMPLE.encode(), id="a utf-8 byte order mark"),
    pytest.param(b'{"path": "a"}\xff', id="a stray byte after the value"),
]

PATH_VALUES = {
    "internal_id": "nosuch-1",
    "ip": "127.0.0.1",
    "port": "25565",
    "token": "lightd_" + "0" * 32,
    "backup_id": "00000000-0000-4000-8000-000000000000",
}


@pytest.fixture(scope="module")
def body_routes(daemon: DaemonProcess) -> Iterator[list[tuple[str, str]]]:
    """(method, url) of every operation that takes a JSON body, with a real volume."""
    with daemon.client() as api:
        document = api.get("/openapi.json").json()
        volume = api.post("/volumes").json()["volume_id"]
        routes = []
        for path, item in document["paths"].items():
            for method, operation in item.items():
                content = operation.get("requestBody", {}).get("content", {})
                if "application/json" not in content:
                    continue
                url = path.replace("{ref}", volume)
                for name, value in PATH_VALUES.items():
                    url = url.replace(f"{{{name}}}", value)
                assert "{" not in url, f"no value for a parameter of {path}"
                routes.append((method.upper(), url))
        yield routes
        api.delete(f"/volumes/{volume}")


def _no_traceback(daemon: DaemonProcess, before: int) -> None:
    time.sleep(0.6)  # log lines are flushed twice a second
    assert "Traceback" not in daemon.log()[before:]


@pytest.mark.parametrize("body", BAD_BODIES)
def test_every_json_route_refuses_a_body_that_is_not_utf8_json(
    daemon: DaemonProcess, api: httpx.Client, body_routes: list[tuple[str, str]], body: bytes
) -> None:
    assert len(body_routes) >= 15, body_routes
    before = len(daemon.log())
    for content_type in ("application/json", "application/json; charset=utf-16"):
        for method, url in body_routes:
            answer = api.request(method, url, content=body, headers={"Content-Type": content_type})
            assert (answer.status_code, answer.json()) == (400, MALFORMED), (method, url)
    _no_traceback(daemon, before)


@pytest.mark.parametrize(
    ("method", "url", "body", "statuses"),
    [
        pytest.param(
            "POST",
            "/volumes/00000000-0000-4000-8000-000000000000/files",
            SAMPLE.encode("utf-16"),
            {400, 404},
            id="an unknown volume with a utf-16 body",
        ),
        pytest.param(
            "POST", "/volumes/nope/files", b"\xff", {400}, id="a malformed volume id with bad bytes"
        ),
        pytest.param(
            "POST",
            "/auth/tokens",
            b'{"ttl": "' + b"\xe9" * (2 * 1024 * 1024) + b'"}',
            {413},
            id="a latin-1 body over the limit",
        ),
        pytest.param(
            "PUT", "/auth/tokens", b"\xff\xfe", {405}, id="a wrong method with a utf-16 mark"
        ),
        pytest.param(
            "POST",
            "/volumes/00000000-0000-4000-8000-000000000000/files",
            b"[" * 1024 + b"1.0" + b"]" * 1024,
            {400},
            id="a body nested as deep as the parser allows",
        ),
        pytest.param(
            "POST",
            "/auth/tokens",
            b'{"ttl": ' + b"[" * 1023 + b"]" * 1023 + b"}",
            {400},
            id="a field nested as deep as the parser allows",
        ),
        pytest.param(
            "POST",
            "/containers/nosuch-1/start",
            SAMPLE.encode("latin-1"),
            {404},
            id="a route without a body ignores the bytes",
        ),
    ],
)
def test_bad_bytes_on_error_paths_get_a_json_error(
    daemon: DaemonProcess,
    api: httpx.Client,
    method: str,
    url: str,
    body: bytes,
    statuses: set[int],
) -> None:
    before = len(daemon.log())
    answer = api.request(method, url, content=body, headers={"Content-Type": "application/json"})
    assert answer.status_code in statuses, answer.text
    assert set(answer.json()) == {"error"}
    _no_traceback(daemon, before)


def test_websocket_messages_that_are_not_utf8_json_are_errors(lab: Lab) -> None:
    cid = lab.create("enc")
    before = len(lab.daemon.log())
    with Watcher(lab.daemon, f"/ws/{cid}?token={lab.daemon.token}") as watcher:
        for raw in [
            '{"event": "logs"}'.encode("utf-16"),
            '{"event": "logs"}'.encode("latin-1") + b"\xe9",
            b'{"event": "\xed\xa0\x80"}',
            b'{"event": "\\ud800"}',
            b"\xef\xbb\xbf{}",
            '{"event": "\\udfff"}',
        ]:
            watcher.conn.send(raw)
            error = watcher.until(lambda e: e["event"] == "error", what=f"error for {raw!r}")
            assert error["data"] == "Malformed message: not JSON"
        watcher.send({"event": "logs", "lines": 1})
        watcher.until(lambda e: e["event"] == "logs", what="the socket still answers")
    _no_traceback(lab.daemon, before)


def test_names_that_are_not_utf8_are_listed_and_archived(
    daemon: DaemonProcess, api: httpx.Client, tmp_path: Path
) -> None:
    volume = api.post("/volumes").json()["volume_id"]
    try:
        folder = os.fsencode(daemon.data_dir / "volumes" / volume / "odd")
        os.mkdir(folder)
        for raw in (b"caf\xe9.txt", b"\xff\xfe", b"\xed\xa0\x80"):
            with open(os.path.join(folder, raw), "wb") as handle:
                handle.write(b"x")
        os.symlink(b"caf\xe9.txt", os.path.join(folder, b"l\xe9"))
        before = len(daemon.log())
        listed = api.get(f"/volumes/{volume}/files", params={"path": "odd"})
        assert listed.status_code == 200, listed.text
        names = {entry["name"] for entry in listed.json()["files"]}
        assert "caf\ufffd.txt" in names and len(names) == 4
        for fmt in ("zip", "tar", "tar.gz"):
            made = api.post(f"/volumes/{volume}/compress", json={"output_name": "o", "format": fmt})
            assert made.status_code == 200, (fmt, made.text)
            back = api.post(
                f"/volumes/{volume}/decompress",
                json={"archive_path": made.json()["archive_path"], "destination": f"r-{fmt}"},
            )
            assert back.status_code == 200, (fmt, back.text)
            restored = os.listdir(
                os.fsencode(daemon.data_dir / "volumes" / volume / f"r-{fmt}/odd")
            )
            assert len(restored) == 4, (fmt, restored)
            if fmt != "zip":  # tar keeps the bytes; zip readers take flagless names as cp437
                assert b"caf\xe9.txt" in restored
        _no_traceback(daemon, before)
    finally:
        api.delete(f"/volumes/{volume}")
