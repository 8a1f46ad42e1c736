"""``qat db``, ``qat admin`` and ``qat serve``: migrations, team administration and the API server.

These commands read the same ``QAT_*`` variables as the API and workers and never import
torch, so they are quick and work on hosts without it. Mistakes print one line,
``error [CODE] field: message``, and exit with status 2, like ``qat quantize``.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import click
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError

from service import teams
from service.db import SessionFactory, make_engine, migrate, session_factory
from service.errors import BadSetting, DatabaseUnavailable, InvalidArgument, ServiceError
from service.quota import human_size
from service.server.offload import gevent_patched
from service.settings import Settings, parse_size

USER_ERROR_EXIT = 2


class _UserError(click.ClickException):
    exit_code = USER_ERROR_EXIT

    def __init__(self, error: ServiceError) -> None:
        super().__init__(error.message)
        self.error = error

    def show(self, file: Any = None) -> None:
        click.echo(f"error {self.error}", err=True)


@contextmanager
def _user_errors() -> Iterator[None]:
    """Report ``ServiceError`` (and an unreachable database) as one line instead of a traceback."""
    try:
        yield
    except ServiceError as exc:
        raise _UserError(exc) from exc
    except OperationalError as exc:
        unavailable = DatabaseUnavailable(f"cannot use the database: {exc.orig}", field="QAT_DATABASE_URL")
        raise _UserError(unavailable) from exc


class ServiceGroup(click.Group):
    """A group whose commands report mistakes as one line (see :func:`_user_errors`)."""

    def invoke(self, ctx: click.Context) -> Any:
        with _user_errors():
            return super().invoke(ctx)


class ServiceCommand(click.Command):
    """A single command that reports mistakes as one line (see :func:`_user_errors`)."""

    def invoke(self, ctx: click.Context) -> Any:
        with _user_errors():
            return super().invoke(ctx)


def _database() -> SessionFactory:
    """Sessions on the configured database, after checking its schema is current."""
    engine = make_engine(Settings.from_env().database_url)
    migrate.require_current_schema(engine)
    return session_factory(engine)


@click.group(cls=ServiceGroup)
def db() -> None:
    """The job store's database schema."""


@db.command()
def upgrade() -> None:
    """Create or migrate the schema of QAT_DATABASE_URL to this code's revision."""
    before = migrate.current_revision(make_engine(Settings.from_env().database_url))
    migrate.upgrade()  # migrations/env.py reads the same settings
    click.echo(f"database schema at revision {migrate.head_revision()} (was {before or 'empty'})")


@click.group(cls=ServiceGroup)
def admin() -> None:
    """Teams and their API tokens; retention of stored files."""


_json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")


# a new team's limits; set-team changes only the ones given
TEAM_DEFAULTS = {"max_running": 2, "max_queued": 100, "weight": 1, "max_storage": "100GiB", "max_datasets": 100}
_TEAM_LIMITS = {
    "max_running": ("Jobs running at once.", click.IntRange(min=1)),
    "max_queued": ("Jobs waiting at once.", click.IntRange(min=1)),
    "weight": ("Share of the GPU pool.", click.IntRange(min=1)),
    "max_storage": ("Bytes of inputs, results and datasets kept, e.g. 500GiB.", click.STRING),
    "max_datasets": ("Datasets kept.", click.IntRange(min=1)),
}


def _team_limits(defaults: dict[str, object] | None) -> Callable[[Callable[..., None]], Callable[..., None]]:
    """The team-limit options, with ``defaults`` (create-team) or none (set-team: unset means unchanged)."""

    def apply(command: Callable[..., None]) -> Callable[..., None]:
        for name, (help_text, kind) in reversed(_TEAM_LIMITS.items()):
            default = None if defaults is None else defaults[name]
            flag = "--" + name.replace("_", "-")
            command = click.option(flag, type=kind, default=default, show_default=defaults is not None, help=help_text)(
                command
            )
        return command

    return apply


def _storage_size(value: str) -> int:
    try:
        return parse_size(value, "--max-storage")
    except BadSetting as error:  # the same words, but about an argument, not the environment
        raise InvalidArgument(error.message, field="--max-storage") from None


@admin.command("create-team")
@click.argument("name")
@_team_limits(TEAM_DEFAULTS)
@_json_option
def create_team(name: str, as_json: bool, **limits: Any) -> None:
    """Create team NAME and print its first API token (shown only this once)."""
    issued = teams.create_team(_database(), name, **_team_arguments(limits))
    if not as_json:
        shown = ", ".join(f"{key}={value}" for key, value in limits.items())
        click.echo(f"created team {name!r} ({shown})")
    _print_token(issued, as_json)


@admin.command("set-team")
@click.argument("name")
@_team_limits(None)
def set_team(name: str, **limits: Any) -> None:
    """Change team NAME's limits or weight; the dispatcher applies them on its next tick."""
    if all(value is None for value in limits.values()):
        flags = ", ".join("--" + key.replace("_", "-") for key in limits)
        raise click.UsageError(f"give at least one of {flags}")
    team = teams.update_team(_database(), name, **_team_arguments(limits))
    click.echo(
        f"team {name!r}: max_running={team.max_running}, max_queued={team.max_queued}, weight={team.weight}, "
        f"storage {human_size(team.storage_bytes)} of {human_size(team.max_storage_bytes)}, "
        f"datasets {team.datasets} of {team.max_datasets}"
    )


def _team_arguments(limits: dict[str, Any]) -> dict[str, Any]:
    """The options as :mod:`service.teams` takes them: the storage size in bytes."""
    arguments = {key: value for key, value in limits.items() if key != "max_storage"}
    storage = limits["max_storage"]
    return {**arguments, "max_storage_bytes": None if storage is None else _storage_size(storage)}


@admin.command("create-token")
@click.argument("team")
@_json_option
def create_token(team: str, as_json: bool) -> None:
    """Print a new API token for TEAM (shown only this once)."""
    _print_token(teams.create_token(_database(), team), as_json)


@admin.command("revoke-token")
@click.argument("prefix")
def revoke_token(prefix: str) -> None:
    """Revoke the token whose prefix (qat_ and 12 hex digits) is PREFIX."""
    token = teams.revoke_token(_database(), prefix)
    click.echo(f"token {token.prefix} revoked at {token.revoked_at:%Y-%m-%d %H:%M:%S} UTC")


@admin.command("list-teams")
@_json_option
def list_teams(as_json: bool) -> None:
    """Every team with its limits, its storage and datasets in use, and its number of active tokens."""
    rows = teams.list_teams(_database())
    if as_json:
        click.echo(json.dumps([{**vars(row), "created_at": row.created_at.isoformat()} for row in rows]))
        return
    header = ("NAME", "MAX_RUNNING", "MAX_QUEUED", "WEIGHT", "STORAGE", "DATASETS", "TOKENS", "CREATED")
    table = [header] + [
        (
            r.name,
            str(r.max_running),
            str(r.max_queued),
            str(r.weight),
            f"{human_size(r.storage_bytes)} / {human_size(r.max_storage_bytes)}",
            f"{r.datasets} / {r.max_datasets}",
            str(r.active_tokens),
            f"{r.created_at:%Y-%m-%d}",
        )
        for r in rows
    ]
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    for row in table:
        click.echo("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())


@admin.command("gc")
@click.option("--older-than", "older_than", required=True, help="Retention period: 30d, 12h, 90m, 3600s, 2w.")
@click.option("--dry-run", is_flag=True, help="Only list what would be deleted.")
@_json_option
def gc(older_than: str, dry_run: bool, as_json: bool) -> None:
    """Delete the files of jobs that ended before the period, and orphaned uploads older than it."""
    from service.artifacts import store_from_settings
    from service.ops.retention import collect_garbage, parse_duration

    period = parse_duration(older_than)
    report = collect_garbage(_database(), store_from_settings(Settings.from_env()), period, dry_run=dry_run)
    if as_json:
        click.echo(json.dumps({"dry_run": dry_run, **report.to_dict()}))
        return
    verb = "would delete" if dry_run else "deleted"
    click.echo(
        f"{verb} {len(report.expired_keys)} objects of {len(report.expired_jobs)} jobs that ended over "
        f"{older_than} ago and {len(report.orphan_keys)} orphaned objects"
    )


def _print_token(issued: teams.IssuedToken, as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps({"team": issued.team, "prefix": issued.prefix, "token": issued.token}))
        return
    click.echo(f"token: {issued.token}")
    click.echo(f"Store it now: it is shown only this once. Revoke it with `qat admin revoke-token {issued.prefix}`.")


@click.command(cls=ServiceCommand)
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on (0.0.0.0: every interface).")
@click.option("--port", type=click.IntRange(1, 65535), default=8000, show_default=True, help="TCP port.")
def serve(host: str, port: int) -> None:
    """Run the HTTP API (gevent: one greenlet per connection) until interrupted.

    Connections, timeouts and stream bounds come from QAT_HTTP_* and QAT_MAX_STREAMS*.
    """
    settings = Settings.from_env()  # a bad setting is reported here, before the restart below
    if not gevent_patched():
        # gevent must patch the standard library before anything imports socket or ssl:
        # start again in a fresh interpreter whose first act is that (service/server/main.py)
        os.execv(
            sys.executable, [sys.executable, "-m", "service.server.main", "serve", "--host", host, "--port", str(port)]
        )
    # imported here so `qat db` and `qat admin` stay quick: they need neither Flask nor gevent
    from service.api.app import create_app
    from service.server.wsgi import ServerLimits, run

    app = create_app(settings)
    database = make_url(settings.database_url).render_as_string(hide_password=True)
    limits = ServerLimits(
        max_connections=settings.http_max_connections,
        idle_timeout_s=settings.http_idle_timeout_s,
        head_timeout_s=settings.http_head_timeout_s,
    )
    click.echo(f"qat API on http://{host}:{port}/ (database {database})")
    run(app, host, port, limits)
