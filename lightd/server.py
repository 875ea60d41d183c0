"""Runs the daemon under Hypercorn until SIGTERM or SIGINT, then shuts down cleanly.

lightd binds the listening socket itself (so a port in use is a clear config error and
port 0 reports the port it got) and hands it to Hypercorn. It must not build routes.
"""

from __future__ import annotations

import asyncio
import errno
import gc
import logging
import signal
import socket
from pathlib import Path

from hypercorn.asyncio import serve, tcp_server
from hypercorn.config import Config as HypercornConfig
from hypercorn.protocol import ws_stream
from wsproto.extensions import PerMessageDeflate

from lightd.api.app import create_app
from lightd.config import Settings
from lightd.daemon import Daemon
from lightd.errors import ConfigError
from lightd.logsetup import flush_logs
from lightd.sdnotify import notify

log = logging.getLogger("lightd.server")


def bind_socket(host: str, port: int) -> socket.socket:
    """A listening TCP socket on host:port; ConfigError if it cannot be had."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(1024)
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise ConfigError(f"server.port {port} on {host} is already in use") from exc
        raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror}") from exc
    return sock


def print_master_token_notice(daemon: Daemon) -> None:
    """Printed once, on the start that generated the token; never logged."""
    master = daemon.master
    if not master.generated:
        return
    port = daemon.settings.server.port
    print(
        "\n"
        f"lightd generated a master token and stored it in {master.path} (mode 0600):\n"
        f"    {master.value}\n"
        "Use it on every API call, for example:\n"
        f'    curl -H "Authorization: Bearer $(cat {master.path})" '
        f"-H 'Accept: application/vnd.pkglatv1+json' http://{daemon.settings.server.host}:{port}/system\n"
        "It is not printed again; read it from that file when you need it.\n",
        flush=True,
    )


class _DeclinedDeflate(PerMessageDeflate):
    """permessage-deflate that declines every offer (Hypercorn always offers it)."""

    def accept(self, offer: str) -> None:
        return None


def set_websocket_compression(enabled: bool) -> None:
    """Hypercorn has no setting for it: swap the extension its handshake offers."""
    extension = PerMessageDeflate if enabled else _DeclinedDeflate
    setattr(ws_stream, "PerMessageDeflate", extension)  # noqa: B010 (not a public name)


# What one read of a connection may take (Hypercorn reads 64 KiB at a time): a transfer
# body arrives in fewer, larger pieces, each costing one pass through h11 and the app.
RECEIVE_BYTES = 1024 * 1024


def set_receive_size(size: int = RECEIVE_BYTES) -> None:
    """Hypercorn has no setting for it either: its read size is a module constant."""
    setattr(tcp_server, "MAX_RECV", size)  # noqa: B010 (not a public name)


def _reload_on_hangup(daemon: Daemon) -> None:
    try:
        daemon.reload()
    except ConfigError as exc:
        log.error("configuration not reloaded: %s", exc.message)


async def run_server(settings: Settings, *, config_path: Path | None) -> None:
    sock = bind_socket(settings.server.host, settings.server.port)
    actual_port = sock.getsockname()[1]
    settings.server.port = actual_port
    daemon = Daemon(settings, config_path=config_path)
    app = create_app(daemon.services)

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    loop.add_signal_handler(signal.SIGHUP, _reload_on_hangup, daemon)

    set_websocket_compression(settings.websocket.compression)
    set_receive_size()
    hconfig = HypercornConfig()
    # Hypercorn takes ownership of the descriptor (and closes it on shutdown).
    hconfig.bind = [f"fd://{sock.detach()}"]
    hconfig.accesslog = None
    hconfig.errorlog = logging.getLogger("lightd.hypercorn")
    hconfig.graceful_timeout = settings.server.shutdown_grace_seconds
    hconfig.keep_alive_timeout = 75
    hconfig.websocket_max_message_size = settings.websocket.max_frame_bytes

    await daemon.start()
    # Everything built at start (modules, settings, the documents) lives as long as
    # the process: keep it out of the cyclic collector's scans of the old generation.
    gc.collect()
    gc.freeze()
    gc.enable()  # off since the start of ``lightd serve`` (see ``lightd.__main__``)
    flush_logs()  # the lines so far come before the notice
    print_master_token_notice(daemon)
    notify("READY=1\nSTATUS=serving")
    daemon.spawn_log_flusher()
    log.info(
        "lightd listening on %s:%d",
        settings.server.host,
        actual_port,
        extra={"fields": {"host": settings.server.host, "port": actual_port}},
    )
    flush_logs()
    try:
        await serve(app, hconfig, shutdown_trigger=stop.wait)
    finally:
        notify("STOPPING=1")
        log.info("lightd stopping")
        await daemon.stop()
        log.info("lightd stopped")
        flush_logs()
