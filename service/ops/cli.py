"""``qat db``, ``qat admin`` and ``qat serve``: migrations, team administration and the API server.

These commands read the same ``QAT_*`` variables as the API and workers and never import
torch, so they are quick and work on hosts without it. Mistakes print one line,
``error [CODE] field: message``, and exit with status 2, like ``qat quantize``.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
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


def _storage_size(value: str) -> int:
    try:
        return parse_size(value, "--max-storage")
    except BadSetting as error:  # the same words, but about an argument, not the environment
        raise InvalidArgument(error.message, field="--max-storage") from None


@admin.command("create-team")
@click.argument("name")
@click.option("--max-running", type=click.IntRange(min=1), default=2, show_default=True, help="Jobs running at once.")
@click.option("--max-queued", type=click.IntRange(min=1), default=100, show_default=True, help="Jobs waiting at once.")
@click.option("--weight", type=click.IntRange(min=1), default=1, show_default=True, help="Share of the GPU pool.")
@click.option("--max-storage", default="100GiB", show_default=True, help="Bytes of inputs, results and datasets kept.")
@click.option("--max-datasets", type=click.IntRange(min=1), default=100, show_default=True, help="Datasets kept.")
@_json_option
def create_team(
    name: str, max_running: int, max_queued: int, weight: int, max_storage: str, max_datasets: int, as_json: bool
) -> None:
    """Create team NAME and print its first API token (shown only this once)."""
    issued = teams.create_team(
        _database(),
        name,
        max_running=max_running,
        max_queued=max_queued,
        weight=weight,
        max_storage_bytes=_storage_size(max_storage),
        max_datasets=max_datasets,
    )
    if not as_json:
        click.echo(
            f"created team {name!r} (max_running={max_running}, max_queued={max_queued}, weight={weight}, "
            f"max_storage={max_storage}, max_datasets={max_datasets})"
        )
    _print_token(issued, as_json)


@admin.command("set-team")
@click.argument("name")
@click.option("--max-running", type=click.IntRange(min=1), default=None, help="Jobs running at once.")
@click.option("--max-queued", type=click.IntRange(min=1), default=None, help="Jobs waiting at once.")
@click.option("--weight", type=click.IntRange(min=1), default=None, help="Share of the GPU pool.")
@click.option("--max-storage", default=None, help="Bytes of inputs, results and datasets kept, e.g. 500GiB.")
@click.option("--max-datasets", type=click.IntRange(min=1), default=None, help="Datasets kept.")
def set_team(
    name: str,
    max_running: int | None,
    max_queued: int | None,
    weight: int | None,
    max_storage: str | None,
    max_datasets: int | None,
) -> None:
    """Change team NAME's limits or weight; the dispatcher applies them on its next tick."""
    if all(value is None for value in (max_running, max_queued, weight, max_storage, max_datasets)):
        raise click.UsageError(
            "give at least one of --max-running, --max-queued, --weight, --max-storage, --max-datasets"
        )
    team = teams.update_team(
        _database(),
        name,
        max_running=max_running,
        max_queued=max_queued,
        weight=weight,
        max_storage_bytes=None if max_storage is None else _storage_size(max_storage),
        max_datasets=max_datasets,
    )
    click.echo(
        f"team {name!r}: max_running={team.max_running}, max_queued={team.max_queued}, weight={team.weight}, "
        f"storage {human_size(team.storage_bytes)} of {human_size(team.max_storage_bytes)}, "
        f"datasets {team.datasets} of {team.max_datasets}"
    )


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
