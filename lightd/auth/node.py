"""This node's identity: a stable id in the data folder, put on every Docker object.

Several lightd processes may share one Docker engine (tests, staging next to
production); each touches only containers labelled with its own node id. Must not log.
"""

from __future__ import annotations

import secrets
from pathlib import Path

NODE_ID_FILE = "node.id"


def ensure_node_id(data_dir: Path) -> str:
    path = data_dir / NODE_ID_FILE
    try:
        value = path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        value = ""
    if value:
        return value
    value = secrets.token_hex(8)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(value + "\n", encoding="utf-8")
    tmp.replace(path)
    return value
