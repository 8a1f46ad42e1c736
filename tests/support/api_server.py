"""The API app served in the test's own process on a loopback port, for tests that need its internals.

A threaded server (werkzeug's), so a test can reach the app's database and store
directly and stop it through public calls. The server ``qat serve`` really runs (gevent,
which must patch the whole interpreter) is tested as its own process: ``bench/served.py``.
"""

from __future__ import annotations

import threading
import uuid
from typing import Any

import requests
from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler, make_server

from service.api.services import EXTENSION, Services
from service.teams import create_team


class _QuietHandler(WSGIRequestHandler):
    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        """No access log: a test's output should be its own."""


class ApiServer:
    """``app`` on a free loopback port, served from a background thread until :meth:`close`."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.server: BaseWSGIServer = make_server("127.0.0.1", 0, app, threaded=True, request_handler=_QuietHandler)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def services(self) -> Services:
        found: Services = self.app.extensions[EXTENSION]
        return found

    def client(self, token: str | None) -> requests.Session:
        """A session that sends ``token`` as its bearer token and prefixes paths with the server URL."""
        session = BaseUrlSession(self.url)
        if token is not None:
            session.headers["Authorization"] = f"Bearer {token}"
        return session

    def new_team(self, **limits: int) -> requests.Session:
        """A client for a new team."""
        return self.client(create_team(self.services.db, f"team-{uuid.uuid4().hex[:8]}", **limits).token)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=10)
        self.services.engine.dispose()


class BaseUrlSession(requests.Session):
    """A requests session whose paths are relative to ``base``, with a default timeout."""

    def __init__(self, base: str) -> None:
        super().__init__()
        self.base = base

    def request(self, method: str | bytes, url: str | bytes, *args: Any, **kwargs: Any) -> requests.Response:
        kwargs.setdefault("timeout", 30)
        return super().request(method, f"{self.base}{url!s}", *args, **kwargs)
