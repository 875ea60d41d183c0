"""Configuration: file, environment, bad configs (exit code 2, one line), reload."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import httpx
import orjson
import pytest

from lightd.config import load_settings
from lightd.errors import ConfigError
from tests.support.daemon import REPO, DaemonProcess


def run_serve(
    tmp_path: Path, config: bytes | None, env: dict[str, str]
) -> subprocess.CompletedProcess[str]:
    args = [sys.executable, "-m", "lightd", "serve"]
    if config is not None:
        path = tmp_path / "config.json"
        path.write_bytes(config)
        args += ["--config", str(path)]
    base = {
        "PATH": "/usr/bin:/bin",
        "LIGHTD_STORAGE__DATA_DIR": str(tmp_path / "var"),
        "LIGHTD_STORAGE__DESIRED_DIR": str(tmp_path / "desired"),
    }
    if config is None:
        base["LIGHTD_SERVER__PORT"] = "0"
    return subprocess.run(
        args, cwd=REPO, env={**base, **env}, capture_output=True, text=True, timeout=30
    )


@pytest.mark.parametrize(
    ("config", "env", "needle"),
    [
        pytest.param(b'{"bogus": {}}', {}, "bogus: unknown setting", id="unknown-section"),
        pytest.param(b'{"server": {"colour": 1}}', {}, "server.colour", id="unknown-key"),
        pytest.param(b'{"server": {"port": "http"}}', {}, "server.port", id="wrong-type"),
        pytest.param(b'{"server": {"port": 70000}}', {}, "server.port", id="port-range"),
        pytest.param(b"{not json", {}, "not valid JSON", id="not-json"),
        pytest.param(b"[1]", {}, "JSON object", id="not-object"),
        pytest.param(None, {"LIGHTD_SERVER__PORT": "x"}, "server.port", id="env-wrong-type"),
        pytest.param(
            b'{"authorization": {"enabled": false}, "server": {"host": "0.0.0.0"}}',
            {},
            "loopback",
            id="auth-off-public",
        ),
        pytest.param(None, {"LIGHTD_LOGGING__LEVEL": "loud"}, "logging.level", id="bad-level"),
    ],
)
def test_bad_config_exits_2_with_one_line(
    tmp_path: Path, config: bytes | None, env: dict[str, str], needle: str
) -> None:
    done = run_serve(tmp_path, config, env)
    assert done.returncode == 2, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, done.stderr
    assert needle in lines[0]
    assert "Traceback" not in done.stderr


def test_unreadable_config_file(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "lightd", "serve", "--config", str(tmp_path / "missing.json")],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 2
    assert done.stderr.strip().count("\n") == 0
    assert "cannot read config file" in done.stderr


def test_port_in_use_exits_2(tmp_path: Path) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        done = run_serve(tmp_path, None, {"LIGHTD_SERVER__PORT": str(port)})
    assert done.returncode == 2
    assert f"server.port {port}" in done.stderr
    assert "in use" in done.stderr
    assert done.stderr.strip().count("\n") == 0


def test_environment_overrides_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "c.json"
    path.write_bytes(orjson.dumps({"server": {"host": "127.0.0.2", "port": 9000}}))
    monkeypatch.setenv("LIGHTD_SERVER__PORT", "9100")
    monkeypatch.setenv("LIGHTD_AUTHORIZATION__TOKEN", "lightd_x")
    settings = load_settings(path)
    assert settings.server.host == "127.0.0.2"
    assert settings.server.port == 9100
    assert settings.authorization.token == "lightd_x"


def test_config_from_environment_variable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "c.json"
    path.write_bytes(orjson.dumps({"remote": {"enabled": True, "url": "http://panel"}}))
    monkeypatch.setenv("LIGHTD_CONFIG", str(path))
    assert load_settings().remote.url == "http://panel"


def test_auth_may_be_off_on_loopback() -> None:
    with pytest.raises(ConfigError):
        load_settings_from({"authorization": {"enabled": False}, "server": {"host": "::"}})
    settings = load_settings_from({"authorization": {"enabled": False}, "server": {"host": "::1"}})
    assert settings.authorization.enabled is False


def load_settings_from(data: dict[str, object]) -> object:
    import tempfile

    with tempfile.NamedTemporaryFile("wb", suffix=".json") as handle:
        handle.write(orjson.dumps(data))
        handle.flush()
        return load_settings(Path(handle.name))


def test_master_token_generated_once_with_mode_0600(tmp_path: Path) -> None:
    proc = DaemonProcess(tmp_path / "d", token="")
    proc.start()
    try:
        token_file = proc.data_dir / "master.token"
        token = token_file.read_text().strip()
        assert token.startswith("lightd_") and len(token) == 39
        assert token_file.stat().st_mode & 0o777 == 0o600
        assert proc.log().count(token) == 1  # printed once, with how to use it
        assert "Authorization: Bearer" in proc.log()
        with proc.client(token=token) as api:
            assert api.get("/system").status_code == 200
        proc.restart()
        assert token_file.read_text().strip() == token
        assert proc.log().count(token) == 1
    finally:
        proc.stop()


def test_remote_config_needs_token_and_answers_contract_shape(daemon: DaemonProcess) -> None:
    assert httpx.get(f"{daemon.base_url}/remote/config").status_code == 401
    with daemon.client() as api:
        body = api.get("/remote/config").json()
    assert set(body) == {"version", "server", "authorization", "remote"}
    assert body["server"] == {"host": "127.0.0.1", "port": daemon.port}
    assert body["authorization"] == {"enabled": True, "token": daemon.token}
    # The contract's three keys, plus the panel's reachability and the outbox size.
    assert set(body["remote"]) == {
        "enabled",
        "url",
        "token",
        "reachable",
        "last_checked",
        "last_error",
        "pending",
    }


def test_reload_applies_token_and_keeps_old_config_when_broken(tmp_path: Path) -> None:
    proc = DaemonProcess(
        tmp_path / "d",
        token="",
        config={"authorization": {"token": "lightd_" + "1" * 32}, "logging": {"level": "info"}},
    )
    proc.start()
    try:
        with proc.client(token="lightd_" + "1" * 32) as api:
            proc.config_path.write_bytes(b'{"server": {"port": "oops"}')
            broken = api.post("/remote/config/reload")
            assert broken.status_code == 400
            assert "not reloaded" in broken.json()["error"]
            proc.config_path.write_bytes(orjson.dumps({"server": {"colour": "red"}}))
            invalid = api.post("/remote/config/reload")
            assert invalid.status_code == 400
            assert "server.colour" in invalid.json()["error"]
            assert api.get("/system").status_code == 200  # old token still valid

            proc.config_path.write_bytes(
                orjson.dumps(
                    {
                        "authorization": {"token": "lightd_" + "2" * 32},
                        "remote": {"enabled": True, "url": "http://127.0.0.1:9/api", "token": "r"},
                    }
                )
            )
            ok = api.post("/remote/config/reload")
            assert ok.json() == {"message": "Configuration reloaded successfully"}
            assert api.get("/system").status_code == 401
        with proc.client(token="lightd_" + "2" * 32) as api:
            body = api.get("/remote/config").json()
            assert {k: body["remote"][k] for k in ("enabled", "url", "token")} == {
                "enabled": True,
                "url": "http://127.0.0.1:9/api",
                "token": "r",
            }
    finally:
        proc.stop()
