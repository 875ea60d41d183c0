"""The port pool over HTTP against a real daemon: every route, bad input, races, restarts.

Tests on the shared daemon each use their own loopback address (``127.0.<n>.1``) so
they never see each other's ports; ``random`` is always filtered by that address.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import orjson
import pytest

from tests.support.daemon import DaemonProcess


def free_ports(ip: str, count: int, kind: int = socket.SOCK_STREAM) -> list[int]:
    """Ports the host has free on ``ip`` right now (asked from the kernel)."""
    holders = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, kind)
            sock.bind((ip, 0))
            holders.append(sock)
        return [sock.getsockname()[1] for sock in holders]
    finally:
        for sock in holders:
            sock.close()


def add(api: httpx.Client, ip: str, port: int, protocol: str = "tcp") -> None:
    answer = api.post("/network/ports", json={"ip": ip, "port": port, "protocol": protocol})
    assert answer.status_code == 200, answer.text


def view(ip: str, port: int, protocol: str = "tcp", **over: Any) -> dict[str, Any]:
    body = {"ip": ip, "port": port, "protocol": protocol, "in_use": False}
    body.update({"reserved": False, "container": None})
    body.update(over)
    return body


def listed(api: httpx.Client, ip: str) -> list[dict[str, Any]]:
    answer = api.get("/network/ports")
    assert answer.status_code == 200
    return [p for p in answer.json()["ports"] if p["ip"] == ip]


# ---- every route ---------------------------------------------------------------------


def test_add_get_list_delete(api: httpx.Client) -> None:
    ip = "127.0.1.1"
    answer = api.post("/network/ports", json={"ip": ip, "port": 25565, "protocol": "tcp"})
    assert answer.status_code == 200
    assert answer.json() == {
        "message": "Port added to pool",
        "ip": ip,
        "port": 25565,
        "protocol": "tcp",
    }
    assert api.post("/network/ports", json={"ip": ip, "port": 19132, "protocol": "udp"}).is_success
    default = api.post("/network/ports", json={"ip": ip, "port": 25566})
    assert default.json()["protocol"] == "tcp"

    again = api.post("/network/ports", json={"ip": ip, "port": 25565, "protocol": "udp"})
    assert again.status_code == 400
    assert again.json() == {"error": "Port already exists in pool"}

    assert api.get(f"/network/ports/{ip}/25565").json() == view(ip, 25565)
    assert api.get(f"/network/ports/{ip}/19132").json() == view(ip, 19132, "udp")
    assert listed(api, ip) == [view(ip, 25565), view(ip, 19132, "udp"), view(ip, 25566)]
    assert api.get("/network/ports").json()["errors"] == []

    deleted = api.delete(f"/network/ports/{ip}/25566")
    assert deleted.status_code == 200
    assert deleted.json() == {"message": "Port deleted from pool"}
    for method in ("get", "delete"):
        gone = api.request(method.upper(), f"/network/ports/{ip}/25566")
        assert gone.status_code == 404
        assert gone.json() == {"error": "Port not found in pool"}
    missing_use = api.put(f"/network/ports/{ip}/25566/use")
    assert (missing_use.status_code, missing_use.json()) == (
        404,
        {"error": "Port not found in pool"},
    )


@pytest.mark.parametrize(
    "path_ip",
    [
        pytest.param("::1", id="plain"),
        pytest.param("%3A%3A1", id="url-encoded"),
        pytest.param("0:0:0:0:0:0:0:1", id="long-form"),
        pytest.param("[::1]", id="brackets"),
    ],
)
def test_ipv6_in_paths(api: httpx.Client, path_ip: str) -> None:
    port = 30000 + sum(map(ord, path_ip))
    added = api.post("/network/ports", json={"ip": "0:0::1", "port": port, "protocol": "udp"})
    assert added.json()["ip"] == "::1"
    assert api.get(f"/network/ports/{path_ip}/{port}").json() == view("::1", port, "udp")
    used = api.put(f"/network/ports/{path_ip}/{port}/use")
    assert used.json()["in_use"] is True
    assert api.delete(f"/network/ports/{path_ip}/{port}").status_code == 200
    assert api.get(f"/network/ports/::1/{port}").status_code == 404


def test_use_reserves_and_releases(api: httpx.Client) -> None:
    ip = "127.0.2.1"
    add(api, ip, 25565)
    reserved = api.put(f"/network/ports/{ip}/25565/use")
    assert reserved.status_code == 200
    assert reserved.json() == {
        "message": "Port usage updated",
        "ip": ip,
        "port": 25565,
        "in_use": True,
        "reserved": True,
        "container": None,
    }
    assert api.get(f"/network/ports/{ip}/25565").json()["in_use"] is True

    twice = api.put(f"/network/ports/{ip}/25565/use", json={"in_use": True})
    assert (twice.status_code, twice.json()) == (409, {"error": "Port already in use"})

    released = api.put(f"/network/ports/{ip}/25565/use", json={"in_use": False})
    assert released.status_code == 200
    assert released.json()["in_use"] is False
    again = api.put(f"/network/ports/{ip}/25565/use", json={"in_use": False})
    assert again.status_code == 200, "releasing a free port is a no-op"
    assert listed(api, ip) == [view(ip, 25565)]


def test_a_reserved_port_can_be_deleted(api: httpx.Client) -> None:
    ip = "127.0.3.1"
    add(api, ip, 25565)
    assert api.put(f"/network/ports/{ip}/25565/use").status_code == 200
    assert api.delete(f"/network/ports/{ip}/25565").status_code == 200
    assert listed(api, ip) == []


def test_random_and_reserve(api: httpx.Client) -> None:
    ip = "127.0.4.1"
    tcp = free_ports(ip, 3)
    (udp,) = free_ports(ip, 1, socket.SOCK_DGRAM)
    for port in tcp:
        add(api, ip, port)
    add(api, ip, udp, "udp")

    seen = {api.get("/network/ports/random", params={"ip": ip}).json()["port"] for _ in range(40)}
    assert seen == {*tcp, udp}, "every free port can be picked"
    picked = api.get("/network/ports/random", params={"ip": ip, "protocol": "udp"}).json()
    assert picked == view(ip, udp, "udp")
    assert api.get(f"/network/ports/{ip}/{udp}").json()["in_use"] is False, (
        "a pick reserves nothing"
    )

    got = []
    for _ in tcp:
        answer = api.get(
            "/network/ports/random", params={"ip": ip, "protocol": "tcp", "reserve": "true"}
        )
        assert answer.status_code == 200
        body = answer.json()
        assert (body["in_use"], body["reserved"]) == (True, True)
        got.append(body["port"])
    assert sorted(got) == sorted(tcp)
    none_left = api.get("/network/ports/random", params={"ip": ip, "protocol": "tcp"})
    assert (none_left.status_code, none_left.json()) == (404, {"error": "No available ports"})
    unknown_ip = api.get("/network/ports/random", params={"ip": "127.0.4.99"})
    assert unknown_ip.status_code == 404


def test_bulk_add_list_and_range(api: httpx.Client) -> None:
    ip = "127.0.5.1"
    as_list = api.post(
        "/network/ports/bulk",
        json={"ports": [{"ip": ip, "port": 1000}, {"ip": ip, "port": 1001, "protocol": "udp"}]},
    )
    assert as_list.status_code == 200
    assert as_list.json()["added_count"] == 2
    as_range = api.post(
        "/network/ports/bulk", json={"ip": ip, "range": "2000-2099", "protocol": "udp"}
    )
    assert as_range.status_code == 200
    body = as_range.json()
    assert body["message"] == "Added 100 ports to pool"
    assert body["added_count"] == 100
    assert body["ports"][0] == {"ip": ip, "port": 2000, "protocol": "udp"}
    assert len(listed(api, ip)) == 102

    overlapping = api.post("/network/ports/bulk", json={"ip": ip, "range": "1990-2000"})
    assert overlapping.status_code == 400
    assert overlapping.json() == {"error": f"Port already exists in pool: {ip}:2000"}
    duplicate_inside = api.post(
        "/network/ports/bulk", json={"ports": [{"ip": ip, "port": 3000}, {"ip": ip, "port": 3000}]}
    )
    assert duplicate_inside.status_code == 400
    assert len(listed(api, ip)) == 102, "all or nothing"


def test_bulk_delete(api: httpx.Client) -> None:
    ip = "127.0.6.1"
    for port in (25565, 25566, 25567):
        add(api, ip, port)
    answer = api.post(
        "/network/ports/bulk-delete",
        json={
            "ports": [{"ip": ip, "port": 25565}, {"ip": ip, "port": 25566}, {"ip": ip, "port": 9}]
        },
    )
    assert answer.status_code == 200
    assert answer.json() == {
        "message": "Deleted 2 ports from pool",
        "deleted_count": 2,
        "skipped": [{"ip": ip, "port": 9, "reason": "Port not found in pool"}],
    }
    assert [p["port"] for p in listed(api, ip)] == [25567]
    empty = api.post("/network/ports/bulk-delete", json={"ports": []})
    assert empty.json() == {
        "message": "Deleted 0 ports from pool",
        "deleted_count": 0,
        "skipped": [],
    }


# ---- bad input -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "body", "field"),
    [
        pytest.param("POST", "/network/ports", {"ip": "x", "port": 1}, "'ip'", id="add-bad-ip"),
        pytest.param(
            "POST", "/network/ports", {"ip": "1.2.3", "port": 1}, "'ip'", id="add-3-octets"
        ),
        pytest.param("POST", "/network/ports", {"ip": 7, "port": 1}, "'ip'", id="add-ip-number"),
        pytest.param("POST", "/network/ports", {"ip": "::1", "port": 0}, "'port'", id="add-port-0"),
        pytest.param(
            "POST", "/network/ports", {"ip": "::1", "port": 65536}, "'port'", id="add-big"
        ),
        pytest.param("POST", "/network/ports", {"ip": "::1", "port": -1}, "'port'", id="add-neg"),
        pytest.param("POST", "/network/ports", {"ip": "::1", "port": "80"}, "'port'", id="add-str"),
        pytest.param(
            "POST", "/network/ports", {"ip": "::1", "port": 1.5}, "'port'", id="add-float"
        ),
        pytest.param(
            "POST", "/network/ports", {"ip": "::1", "port": True}, "'port'", id="add-bool"
        ),
        pytest.param(
            "POST",
            "/network/ports",
            {"ip": "::1", "port": 1, "protocol": "sctp"},
            "'protocol'",
            id="add-protocol",
        ),
        pytest.param(
            "POST",
            "/network/ports",
            {"ip": "::1", "port": 1, "protocol": "TCP"},
            "'protocol'",
            id="add-protocol-case",
        ),
        pytest.param("POST", "/network/ports", {"port": 1}, "'ip'", id="add-no-ip"),
        pytest.param("POST", "/network/ports", {"ip": "::1"}, "'port'", id="add-no-port"),
        pytest.param(
            "POST",
            "/network/ports",
            {"ip": "::1", "port": 1, "reserved": True},
            "'reserved'",
            id="add-unknown-field",
        ),
        pytest.param("POST", "/network/ports", [], "", id="add-list-body"),
        pytest.param("PUT", "/network/ports/::1/1/use", {"in_use": "no"}, "'in_use'", id="use-str"),
        pytest.param("PUT", "/network/ports/::1/1/use", {"inuse": False}, "'inuse'", id="use-typo"),
        pytest.param("GET", "/network/ports/nope/1", None, "'ip'", id="get-bad-ip"),
        pytest.param("GET", "/network/ports/::1/0", None, "'port'", id="get-port-0"),
        pytest.param("GET", "/network/ports/::1/65536", None, "'port'", id="get-port-big"),
        pytest.param("GET", "/network/ports/::1/http", None, "'port'", id="get-port-name"),
        pytest.param("DELETE", "/network/ports/1.2.3.4.5/1", None, "'ip'", id="delete-bad-ip"),
        pytest.param("PUT", "/network/ports/::1/-1/use", None, "'port'", id="use-negative"),
        pytest.param(
            "GET", "/network/ports/random?protocol=icmp", None, "'protocol'", id="rnd-proto"
        ),
        pytest.param("GET", "/network/ports/random?ip=999.1.1.1", None, "'ip'", id="rnd-ip"),
        pytest.param("GET", "/network/ports/random?reserve=maybe", None, "'reserve'", id="rnd-rsv"),
        pytest.param(
            "POST", "/network/ports/bulk", {"ip": "::1", "range": "10-1"}, "'range'", id="bulk-rev"
        ),
        pytest.param(
            "POST",
            "/network/ports/bulk",
            {"ip": "::1", "range": "1-20000"},
            "'range'",
            id="bulk-too-many",
        ),
        pytest.param(
            "POST",
            "/network/ports/bulk",
            {"ip": "::1", "range": "0-5"},
            "'range'",
            id="bulk-port-0",
        ),
        pytest.param(
            "POST", "/network/ports/bulk", {"ip": "nope", "range": "1-5"}, "'ip'", id="bulk-bad-ip"
        ),
        pytest.param(
            "POST", "/network/ports/bulk", {"range": "1-5"}, "'ip'", id="bulk-range-without-ip"
        ),
        pytest.param(
            "POST",
            "/network/ports/bulk",
            {"ip": "::1", "range": "1-5", "protocol": "x"},
            "'protocol'",
            id="bulk-protocol",
        ),
        pytest.param(
            "POST",
            "/network/ports/bulk",
            {"ports": [{"ip": "::1", "port": 70000}]},
            "'ports.0.port'",
            id="bulk-list-port",
        ),
        pytest.param("POST", "/network/ports/bulk", {"ports": []}, "'ports'", id="bulk-empty"),
        pytest.param("POST", "/network/ports/bulk", {}, "'ports'", id="bulk-nothing"),
        pytest.param(
            "POST",
            "/network/ports/bulk-delete",
            {"ports": [{"ip": "x", "port": 1}]},
            "'ports.0.ip'",
            id="bulkdel-ip",
        ),
        pytest.param(
            "POST",
            "/network/ports/bulk-delete",
            {"ports": [{"ip": "::1", "port": 0}]},
            "'ports.0.port'",
            id="bulkdel-port",
        ),
        pytest.param("POST", "/network/ports/bulk-delete", {}, "'ports'", id="bulkdel-missing"),
        pytest.param(
            "POST", "/network/ports/bulk-delete", {"ports": "all"}, "'ports'", id="bulkdel-str"
        ),
    ],
)
def test_bad_input_is_400_naming_the_field(
    api: httpx.Client, method: str, path: str, body: Any, field: str
) -> None:
    answer = api.request(method, path, json=body) if body is not None else api.request(method, path)
    assert answer.status_code == 400, answer.text
    assert field in answer.json()["error"]


def test_malformed_json_is_400(api: httpx.Client) -> None:
    answer = api.post("/network/ports", content=b'{"ip": "::1", ')
    assert (answer.status_code, answer.json()) == (400, {"error": "Malformed JSON body"})


# ---- races -----------------------------------------------------------------------------


def run_clients(daemon: DaemonProcess, count: int, work: Any) -> list[Any]:
    """``count`` threads, each with its own connection, released together."""
    start = threading.Barrier(count)

    def client(index: int) -> Any:
        with daemon.client() as api:
            api.get("/network/ports/random", params={"ip": "127.0.255.255"})  # connect first
            start.wait()
            return work(api, index)

    with ThreadPoolExecutor(max_workers=count) as pool:
        return list(pool.map(client, range(count)))


def test_100_clients_pick_then_reserve_never_double_book(
    daemon: DaemonProcess, api: httpx.Client
) -> None:
    ip = "127.0.7.1"
    ports = free_ports(ip, 20)
    assert api.post(
        "/network/ports/bulk", json={"ports": [{"ip": ip, "port": p} for p in ports]}
    ).is_success

    def pick_and_reserve(client: httpx.Client, _index: int) -> tuple[str, int | None]:
        picked = client.get("/network/ports/random", params={"ip": ip})
        if picked.status_code == 404:
            return ("none left", None)
        port = picked.json()["port"]
        answer = client.put(f"/network/ports/{ip}/{port}/use")
        if answer.status_code == 409:
            assert answer.json() == {"error": "Port already in use"}
            return ("lost", port)
        assert answer.status_code == 200, answer.text
        return ("won", port)

    results = run_clients(daemon, 100, pick_and_reserve)
    won = [port for outcome, port in results if outcome == "won"]
    assert len(won) == len(set(won)), "a port was reserved twice"
    assert {outcome for outcome, _ in results} <= {"won", "lost", "none left"}
    assert 1 <= len(won) <= len(ports)
    reserved = {p["port"] for p in listed(api, ip) if p["reserved"]}
    assert reserved == set(won)


def test_100_clients_race_for_one_port_exactly_one_wins(
    daemon: DaemonProcess, api: httpx.Client
) -> None:
    ip = "127.0.8.1"
    add(api, ip, 25565)
    statuses = run_clients(
        daemon, 100, lambda client, _i: client.put(f"/network/ports/{ip}/25565/use").status_code
    )
    assert Counter(statuses) == {200: 1, 409: 99}


def test_100_clients_random_reserve_get_distinct_ports(
    daemon: DaemonProcess, api: httpx.Client
) -> None:
    ip = "127.0.9.1"
    ports = free_ports(ip, 30)
    assert api.post(
        "/network/ports/bulk", json={"ports": [{"ip": ip, "port": p} for p in ports]}
    ).is_success

    def reserve(client: httpx.Client, _index: int) -> tuple[int, int | None]:
        answer = client.get("/network/ports/random", params={"ip": ip, "reserve": "true"})
        return answer.status_code, answer.json().get("port")

    results = run_clients(daemon, 100, reserve)
    won = [port for status, port in results if status == 200]
    assert sorted(won) == sorted(ports)
    assert Counter(status for status, _ in results) == {200: 30, 404: 70}


# ---- the host ------------------------------------------------------------------------


@contextlib.contextmanager
def held(ip: str, port: int, kind: int) -> Iterator[socket.socket]:
    sock = socket.socket(socket.AF_INET, kind)
    try:
        sock.bind((ip, port))
        if kind == socket.SOCK_STREAM:
            sock.listen(1)
        yield sock
    finally:
        sock.close()


def test_random_never_returns_a_port_held_on_the_host(api: httpx.Client) -> None:
    ip = "127.0.10.1"
    tcp_held, tcp_free = free_ports(ip, 2)
    (udp_held,) = free_ports(ip, 1, socket.SOCK_DGRAM)
    for port, protocol in ((tcp_held, "tcp"), (tcp_free, "tcp"), (udp_held, "udp")):
        add(api, ip, port, protocol)
    with held(ip, tcp_held, socket.SOCK_STREAM), held(ip, udp_held, socket.SOCK_DGRAM):
        picks = {
            api.get("/network/ports/random", params={"ip": ip}).json()["port"] for _ in range(30)
        }
        assert picks == {tcp_free}
        only_udp = api.get("/network/ports/random", params={"ip": ip, "protocol": "udp"})
        assert only_udp.status_code == 404
        with held(ip, tcp_free, socket.SOCK_STREAM):
            none = api.get("/network/ports/random", params={"ip": ip, "reserve": "true"})
            assert (none.status_code, none.json()) == (404, {"error": "No available ports"})
    assert all(not p["in_use"] for p in listed(api, ip)), "failed picks reserve nothing"


def test_a_wildcard_entry_is_not_free_when_one_address_holds_the_port(api: httpx.Client) -> None:
    (port,) = free_ports("127.0.0.1", 1)
    add(api, "0.0.0.0", port)
    with held("127.0.0.1", port, socket.SOCK_STREAM):
        for _ in range(5):
            assert api.get("/network/ports/random", params={"ip": "0.0.0.0"}).status_code == 404
    assert api.delete(f"/network/ports/0.0.0.0/{port}").status_code == 200


# ---- desired state -----------------------------------------------------------------------


def test_the_pool_survives_a_restart(fresh_daemon: DaemonProcess) -> None:
    ip = "127.0.11.1"
    fresh_daemon.start()
    with fresh_daemon.client() as api:
        add(api, ip, 25565)
        add(api, "::1", 25566, "udp")
        assert api.put(f"/network/ports/{ip}/25565/use").status_code == 200
        before = api.get("/network/ports").json()
    document = orjson.loads((fresh_daemon.desired_dir / "ports.json").read_bytes())
    assert document == {
        "ports": [
            {"ip": ip, "port": 25565, "protocol": "tcp", "reserved": True},
            {"ip": "::1", "port": 25566, "protocol": "udp", "reserved": False},
        ]
    }
    fresh_daemon.restart()
    with fresh_daemon.client() as api:
        assert api.get("/network/ports").json() == before
        assert api.put(f"/network/ports/{ip}/25565/use").status_code == 409


BROKEN_POOL = {
    "ports": [
        {"ip": "127.0.12.1", "port": 25565, "protocol": "tcp", "reserved": False},
        {"ip": "not-an-address", "port": 25566},
        {"ip": "127.0.12.1", "port": 70000},
        {"ip": "127.0.12.1", "port": 25567, "protocol": "sctp"},
        {"ip": "127.0.12.1", "port": 25565, "protocol": "udp"},
        {"ip": "127.0.12.1", "port": 25568, "protocol": "udp"},
    ]
}


def test_a_hand_edited_file_with_broken_entries_keeps_the_rest_usable(
    fresh_daemon: DaemonProcess,
) -> None:
    ip = "127.0.12.1"
    fresh_daemon.desired_dir.mkdir(parents=True)
    path = fresh_daemon.desired_dir / "ports.json"
    path.write_bytes(orjson.dumps(BROKEN_POOL))
    fresh_daemon.start()
    log = fresh_daemon.new_log()
    assert "ports.json entry 1 is invalid and ignored: ip: 'not-an-address'" in log
    assert "ports.json entry 4 is invalid and ignored: duplicate of entry 0" in log
    with fresh_daemon.client() as api:
        body = api.get("/network/ports").json()
        assert body["ports"] == [view(ip, 25565), view(ip, 25568, "udp")]
        assert [(e["index"], e["reason"].split(":")[0]) for e in body["errors"]] == [
            (1, "ip"),
            (2, "port"),
            (3, "protocol"),
            (4, "duplicate of entry 0 (127.0.12.1"),
        ]
        assert api.put(f"/network/ports/{ip}/25565/use").status_code == 200
        assert api.get("/network/ports/random", params={"ip": ip}).json()["port"] == 25568
        assert api.get(f"/network/ports/{ip}/25567").status_code == 404
        add(api, ip, 25569)

        written = orjson.loads(path.read_bytes())["ports"]
        assert written[1:5] == BROKEN_POOL["ports"][1:5], "broken entries are kept for the operator"
        assert written[0]["reserved"] is True
        assert written[-1] == {"ip": ip, "port": 25569, "protocol": "tcp", "reserved": False}

        # The operator fixes one entry by hand: the next call sees it.
        written[3]["protocol"] = "udp"
        path.write_bytes(orjson.dumps({"ports": written}))
        body = api.get("/network/ports").json()
        assert view(ip, 25567, "udp") in body["ports"]
        assert [e["index"] for e in body["errors"]] == [1, 2, 4]

        # A file that is not JSON at all: the last good pool stays, changes are refused.
        path.write_text('{"ports": [')
        body = api.get("/network/ports").json()
        assert [p["port"] for p in body["ports"]] == [25565, 25567, 25568, 25569]
        assert body["errors"][0]["index"] is None
        assert "not valid JSON" in body["errors"][0]["reason"]
        refused = api.post("/network/ports", json={"ip": ip, "port": 25570})
        assert refused.status_code == 409
        assert "ports.json is invalid" in refused.json()["error"]
        assert path.read_text() == '{"ports": ['
