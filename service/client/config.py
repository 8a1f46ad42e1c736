"""Where the ``qat`` client commands find the server URL and the team token.

First match wins: the ``--url``/``--token`` flags, then ``QAT_URL``/``QAT_TOKEN``, then
the config file (``$QAT_CONFIG``, else ``$XDG_CONFIG_HOME/qat/config.toml``, else
``~/.config/qat/config.toml``), like ``aws`` or ``gh``: set it once, then type only
the command. The file is TOML::

    url = "https://qat.example.com"
    token = "qat_..."
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

DEFAULT_URL = "http://127.0.0.1:8000"


class ClientConfigError(Exception):
    """The URL or token is missing, or the config file cannot be read: a usage error."""


@dataclass(frozen=True)
class Connection:
    url: str
    token: str


def config_path(environ: Mapping[str, str] | None = None) -> Path:
    env = os.environ if environ is None else environ
    if env.get("QAT_CONFIG"):
        return Path(env["QAT_CONFIG"]).expanduser()
    base = Path(env["XDG_CONFIG_HOME"]) if env.get("XDG_CONFIG_HOME") else Path.home() / ".config"
    return base / "qat" / "config.toml"


def resolve_connection(url: str | None, token: str | None, environ: Mapping[str, str] | None = None) -> Connection:
    """The URL and token to use; flags beat the environment, which beats the config file."""
    env = os.environ if environ is None else environ
    path = config_path(env)
    file = _read(path)
    resolved_url = url or env.get("QAT_URL") or file.get("url") or DEFAULT_URL
    resolved_token = token or env.get("QAT_TOKEN") or file.get("token")
    if not resolved_token:
        raise ClientConfigError(
            f'no API token: pass --token, set QAT_TOKEN, or put token = "..." in {path} '
            "(an operator creates one with `qat admin create-team NAME`)"
        )
    return Connection(str(resolved_url), str(resolved_token))


def _read(path: Path) -> dict[str, object]:
    try:
        with open(path, "rb") as file:
            return tomllib.load(file)
    except FileNotFoundError:
        return {}
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ClientConfigError(f"cannot read the client config file {path}: {exc}") from exc
