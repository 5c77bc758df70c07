"""``airun serve``: the approval service on uvicorn."""

from __future__ import annotations

import ipaddress
import os
import signal
import threading
from types import FrameType
from typing import TYPE_CHECKING

import click

if TYPE_CHECKING:
    import uvicorn

LOOPBACK = ("127.0.0.1", "::1", "localhost")


def is_loopback(host: str) -> bool:
    if host in LOOPBACK:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def serve(
    db: str | os.PathLike[str] | None,
    host: str,
    port: int,
    *,
    allow_remote: bool = False,
    public_url: str | None = None,
) -> None:
    """Run the service until interrupted; a non-loopback address needs ``allow_remote``."""
    from airun_nb.errors import AirunError

    if not is_loopback(host) and not allow_remote:
        raise AirunError(
            f"refusing to listen on {host}: only loopback by default; pass --allow-remote "
            "(and put a TLS proxy in front)"
        )
    import uvicorn

    from airun_nb.service.app import create_app

    url = public_url or f"http://{'[' + host + ']' if ':' in host else host}:{port}"
    secure = url.startswith("https://")
    from airun_nb.settings import file as settings

    app = create_app(db, url=url, secure_cookies=secure, allowed_hosts=settings.service_hosts())
    if not is_loopback(host):
        click.echo(
            f"warning: listening on {host}: this service speaks plain HTTP; TLS is expected in "
            "front of it (a reverse proxy), and --public-url should be its https:// address",
            err=True,
        )
    config = uvicorn.Config(
        app, host=host, port=port, log_level="warning", proxy_headers=not is_loopback(host)
    )
    server = uvicorn.Server(config)
    _exit_on_signals(server)
    click.echo(f"airun approvals on {url} (store {app.state.store.path}); Ctrl-C stops it")
    server.run()
    if not server.started:  # it could not listen (uvicorn said why)
        raise SystemExit(3)


def _exit_on_signals(server: uvicorn.Server) -> None:
    """SIGTERM and Ctrl-C end the process as a normal exit (status 0, exit handlers run).

    While it serves, uvicorn handles both itself: it shuts down gracefully, then raises the
    signal again with the handler it found. Left at the default, SIGTERM would kill the process
    before its exit handlers (the store's last fold, coverage data) run, and SIGINT would print
    a KeyboardInterrupt. The handler set here only asks the server to stop: a signal before
    uvicorn sets its own (while the event loop is being made) stops the server as it starts,
    instead of raising inside the loop's construction, and the one raised again afterwards
    lets the process end normally.
    """
    if threading.current_thread() is not threading.main_thread():
        return

    def leave(signum: int, frame: FrameType | None) -> None:
        server.should_exit = True

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, leave)
