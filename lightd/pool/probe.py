"""Can this host bind an address and port right now? Asked by trying, and releasing at once.

TCP sockets are bound with ``SO_REUSEADDR`` like the servers and Docker's proxy that
will later publish the port (so a port in ``TIME_WAIT`` counts as free, while a port a
process holds does not). This module must not keep any socket open and must not
decide which port to pick.
"""

from __future__ import annotations

import socket
from collections.abc import Iterable

from lightd.spec.ports import BindingKey


def can_bind(ip: str, port: int, protocol: str) -> bool:
    """True when ``ip``:``port`` could be bound with ``protocol`` at this moment."""
    family = socket.AF_INET6 if ":" in ip else socket.AF_INET
    kind = socket.SOCK_DGRAM if protocol == "udp" else socket.SOCK_STREAM
    try:
        sock = socket.socket(family, kind)
    except OSError:
        return False
    with sock:
        try:
            if kind == socket.SOCK_STREAM:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((ip, port))
        except OSError:
            return False
    return True


def first_bindable(candidates: Iterable[BindingKey]) -> BindingKey | None:
    """The first candidate that can be bound now, in the caller's order."""
    for ip, port, protocol in candidates:
        if can_bind(ip, port, protocol):
            return (ip, port, protocol)
    return None
