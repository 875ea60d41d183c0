"""Templates through the API and the desired folder, on busybox through templates.image_map."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson

from tests.support import engine
from tests.support.daemon import DaemonProcess, wait_for
from tests.support.lab import Lab
from tests.templates.conftest import EGGS, read_egg

MIB = 1024 * 1024


def env_of(internal_id: str) -> dict[str, str]:
    found = engine.inspect(f"lightd-{internal_id}")
    assert found is not None
    return dict(item.split("=", 1) for item in found["Config"]["Env"])


def import_egg(tlab: Lab, name: str, *, as_name: str) -> dict[str, Any]:
    answer = tlab.api.post(f"/templates?name={as_name}", json=read_egg(name))
    assert answer.status_code == 200, answer.text
    return dict(answer.json())


def template_body(tlab: Lab, name: str, template: str, **changes: Any) -> dict[str, Any]:
    body = tlab.body(name, template=template, ports=[tlab.pool_port()])
    body.pop("image")
    body.pop("startup_command")
    body.update(changes)
    return body


def test_import_list_show_delete(tlab: Lab) -> None:
    name = f"{tlab.prefix}-paper"
    written = import_egg(tlab, "egg-paper.json", as_name=name)
    assert written == {"message": "Template written", "name": name, "used_by": []}
    on_disk = orjson.loads((tlab.daemon.desired_dir / "templates" / f"{name}.json").read_bytes())
    assert on_disk["source"] == "PTDL_v2" and on_disk["name"] == name
    listed = {t["name"]: t for t in tlab.api.get("/templates").json()["templates"]}
    assert listed[name]["variables"] == ["MINECRAFT_VERSION", "SERVER_JARFILE", "MOTD"]
    shown = tlab.api.get(f"/templates/{name}").json()
    assert shown["template"]["start"]["done"] == [")! For help, type "]
    assert tlab.api.delete(f"/templates/{name}").status_code == 200
    assert tlab.api.get(f"/templates/{name}").status_code == 404
    assert not (tlab.daemon.desired_dir / "templates" / f"{name}.json").exists()


def test_malformed_egg_is_400_naming_the_field(tlab: Lab) -> None:
    egg = read_egg("egg-rust.json")
    egg["variables"][2]["env_variable"] = "MAX PLAYERS"
    answer = tlab.api.post("/templates", json=egg)
    assert answer.status_code == 400
    assert "variables[2].env_variable" in answer.json()["error"]
    egg = read_egg("egg-rust.json")
    egg["config"]["files"] = "{not json"
    answer = tlab.api.post("/templates", json=egg)
    assert answer.status_code == 400 and "config.files" in answer.json()["error"]
    assert tlab.api.post("/templates", json=[1]).status_code == 400


def test_variables_are_checked_at_admission(tlab: Lab) -> None:
    name = f"{tlab.prefix}-rust"
    import_egg(tlab, "egg-rust.json", as_name=name)
    try:
        cases = [
            ({"MAX_PLAYERS": "501"}, "variables.MAX_PLAYERS", "between:1,500"),
            ({"LEVEL": "Moon"}, "variables.LEVEL", "in:"),
            ({"PVE": "maybe"}, "variables.PVE", "boolean"),
            ({"SERVER_URL": "javascript:alert(1)"}, "variables.SERVER_URL", "url"),
            ({"IDENTITY": "my save"}, "variables.IDENTITY", "alpha_dash"),
            ({"HOSTNAME": ""}, "variables.HOSTNAME", "required"),
            ({"WORLD_SEED": "-5"}, "variables.WORLD_SEED", "min:0"),
            ({"APP_IP": "10.0.0.300"}, "variables.APP_IP", "ip"),
            ({"NOT_THERE": "1"}, "variables.NOT_THERE", "declared"),
        ]
        for variables, field, rule in cases:
            body = template_body(tlab, "bad", name, variables=variables)
            answer = tlab.api.post("/containers", json=body)
            assert answer.status_code == 400, (variables, answer.text)
            error = answer.json()["error"]
            assert field in error and rule in error, error
        body = template_body(tlab, "bad", f"{tlab.prefix}-none")
        answer = tlab.api.post("/containers", json=body)
        assert answer.status_code == 400 and "template" in answer.json()["error"]
        body = template_body(tlab, "bad", name, image="debian:12")
        answer = tlab.api.post("/containers", json=body)
        assert answer.status_code == 400 and "image" in answer.json()["error"]
    finally:
        tlab.api.delete(f"/templates/{name}")


def test_egg_runs_with_install_env_and_verbatim_values(tlab: Lab) -> None:
    name = f"{tlab.prefix}-paper"
    import_egg(tlab, "egg-paper.json", as_name=name)
    motd = 'it\'s | a $(touch /tmp/pwned); `id` "test"'
    body = template_body(tlab, "mc", name, variables={"MOTD": motd})
    answer = tlab.api.post("/containers", json=body)
    assert answer.status_code == 200, answer.text
    internal_id = body["internal_id"]
    tlab.created.append(internal_id)
    tlab.wait_state(internal_id, "running", timeout=60)
    env = env_of(internal_id)
    port = body["ports"][0]["port"]
    assert env["MOTD"] == motd
    assert env["SERVER_MEMORY"] == "64" and env["SERVER_PORT"] == str(port)
    assert env["SERVER_IP"] == "127.0.0.1" and env["TZ"] == "Europe/Berlin"
    assert env["SERVER_JARFILE"] == "server.jar"
    assert env["STARTUP"].startswith('echo "jar=server.jar mem=64 motd=it')
    logs = wait_for(
        lambda: (
            (text := tlab.api.get(f"/containers/{internal_id}/logs").json()["data"])
            and "Done" in text
            and text
        ),
        timeout=20,
        what="the server's output",
    )
    assert f"motd={motd}" in logs
    volume = Path(tlab.volume_path(body["volume_id"]))
    assert (volume / "server.jar").read_text() == "jar\n", "the install ran with the variables"
    view = tlab.get(internal_id)
    assert view["image"] == engine.TEST_IMAGE
    assert view["start_pattern"] == "\\)!\\ For\\ help,\\ type\\ "
    in_use = tlab.api.delete(f"/templates/{name}")
    assert in_use.status_code == 409 and internal_id in in_use.json()["error"]
    tlab.api.delete(f"/containers/{internal_id}")
    tlab.wait_gone(internal_id)
    assert tlab.api.delete(f"/templates/{name}").status_code == 200


def test_gitops_template_edit_reconverges_its_containers(tlab: Lab) -> None:
    name = f"{tlab.prefix}-valheim"
    import_egg(tlab, "egg-pelican-valheim.json", as_name=name)
    first = template_body(tlab, "a", name, variables={"WORLD": "Midgard"})
    second = template_body(tlab, "b", name)
    for body in (first, second):
        assert tlab.api.post("/containers", json=body).status_code == 200
        tlab.created.append(body["internal_id"])
    for body in (first, second):
        tlab.wait_state(body["internal_id"], "running", timeout=60)
    before = {b["internal_id"]: tlab.get(b["internal_id"])["container_id"] for b in (first, second)}
    path = tlab.daemon.desired_dir / "templates" / f"{name}.json"
    document = orjson.loads(path.read_bytes())
    document["startup"] = "echo edited world={{WORLD}}; echo 'Game server connected'; sleep 3600"
    path.write_bytes(orjson.dumps(document, option=orjson.OPT_INDENT_2))
    for body in (first, second):
        key = body["internal_id"]
        tlab.wait(
            key,
            lambda c, key=key: (
                c["container_id"] not in (None, before[key]) and c["state"] == "running"
            ),
            what="re-created with the edited template",
            timeout=60,
        )
        assert env_of(key)["STARTUP"].startswith("echo edited world=")
    assert env_of(first["internal_id"])["STARTUP"].startswith("echo edited world=Midgard;")
    assert env_of(second["internal_id"])["STARTUP"].startswith("echo edited world=Dedicated;")
    for body in (first, second):
        tlab.api.delete(f"/containers/{body['internal_id']}")
        tlab.wait_gone(body["internal_id"])
    assert tlab.api.delete(f"/templates/{name}").status_code == 200


def test_cli_template_import(tmp_path: Path) -> None:
    folder = tmp_path / "desired"

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "lightd", "template", "import", *args, "--dir", str(folder)],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip

    done = run(str(EGGS / "egg-rust.json"))
    assert done.returncode == 0, done.stdout + done.stderr
    assert (folder / "templates" / "rust-tests.json").is_file()
    done = run(str(EGGS / "egg-paper.json"), "--name", "paper-21")
    assert done.returncode == 0, done.stdout + done.stderr
    written = orjson.loads((folder / "templates" / "paper-21.json").read_bytes())
    assert written["name"] == "paper-21"
    broken = tmp_path / "broken.json"
    egg = read_egg("egg-paper.json")
    egg["docker_images"] = {}
    broken.write_bytes(orjson.dumps(egg))
    done = run(str(broken))
    assert done.returncode == 1 and "docker_images" in done.stdout


def test_daemon_reports_a_broken_template_file(tdaemon: DaemonProcess, tlab: Lab) -> None:
    path = tdaemon.desired_dir / "templates" / f"{tlab.prefix}-broken.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f'{{"name": "{tlab.prefix}-broken", "images": {{}}}}')
    try:
        tlab.api.post("/desired/apply", json={})
        problems = tlab.api.get("/desired").json()["problems"]
        mine = [p for p in problems if p["file"].endswith(f"{tlab.prefix}-broken.json")]
        assert mine and "images" in mine[0]["reason"]
    finally:
        path.unlink()
        tlab.api.post("/desired/apply", json={})
