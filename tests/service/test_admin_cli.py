"""``qat db`` and ``qat admin`` run as an operator runs them: separate processes on a SQLite file."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from service.db import make_engine, migrate, session_factory
from service.teams import authenticate

QAT = Path(sys.executable).parent / "qat"


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    """The environment of an operator whose database is a fresh SQLite file."""
    return {**os.environ, "QAT_DATABASE_URL": f"sqlite:///{tmp_path / 'qat.db'}"}


@pytest.fixture(scope="module")
def team_dup_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """A migrated database holding one team, ``dup``, shared by the error tests."""
    env = {**os.environ, "QAT_DATABASE_URL": f"sqlite:///{tmp_path_factory.mktemp('cli') / 'qat.db'}"}
    assert qat(env, "db", "upgrade").returncode == 0
    assert qat(env, "admin", "create-team", "dup").returncode == 0
    return env


def qat(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(QAT), *args], env=env, check=False, capture_output=True, text=True, timeout=60)


def test_admin_before_upgrade_says_what_to_run(env: dict[str, str]) -> None:
    run = qat(env, "admin", "list-teams")
    assert run.returncode == 2
    assert "error [SCHEMA_OUT_OF_DATE]" in run.stderr and "run `qat db upgrade`" in run.stderr


def test_team_lifecycle(env: dict[str, str]) -> None:
    upgrade = qat(env, "db", "upgrade")
    assert upgrade.returncode == 0, upgrade.stderr
    assert "was empty" in upgrade.stdout
    assert f"was {migrate.head_revision()}" in qat(env, "db", "upgrade").stdout  # upgrading again is a no-op

    created = qat(
        env,
        "admin",
        "create-team",
        "vision",
        "--max-running",
        "3",
        "--max-queued",
        "9",
        "--max-storage",
        "2GiB",
        "--max-datasets",
        "5",
        "--json",
    )
    assert created.returncode == 0, created.stderr
    first = json.loads(created.stdout)
    assert first["team"] == "vision" and first["token"].startswith(first["prefix"])

    text = qat(env, "admin", "create-team", "speech")
    assert text.returncode == 0 and "token: qat_" in text.stdout and "shown only this once" in text.stdout

    rotated = json.loads(qat(env, "admin", "create-token", "vision", "--json").stdout)
    assert rotated["token"] != first["token"]

    revoked = qat(env, "admin", "revoke-token", first["prefix"])
    assert revoked.returncode == 0 and f"token {first['prefix']} revoked" in revoked.stdout

    teams = {t["name"]: t for t in json.loads(qat(env, "admin", "list-teams", "--json").stdout)}
    vision = teams["vision"]
    assert (vision["max_running"], vision["max_queued"], vision["active_tokens"]) == (3, 9, 1)
    assert (vision["storage_bytes"], vision["max_storage_bytes"], vision["datasets"], vision["max_datasets"]) == (
        0,
        2 << 30,
        0,
        5,
    )
    assert teams["speech"]["active_tokens"] == 1
    assert (teams["speech"]["max_storage_bytes"], teams["speech"]["max_datasets"]) == (100 << 30, 100)
    changed = qat(env, "admin", "set-team", "speech", "--weight", "3", "--max-storage", "1TiB")
    assert changed.returncode == 0, changed.stderr
    assert "weight=3" in changed.stdout and "max_running=2" in changed.stdout
    assert "storage 0 bytes of 1.0 TiB" in changed.stdout
    table = qat(env, "admin", "list-teams").stdout.splitlines()
    assert table[0].split() == [
        "NAME",
        "MAX_RUNNING",
        "MAX_QUEUED",
        "WEIGHT",
        "STORAGE",
        "DATASETS",
        "TOKENS",
        "CREATED",
    ]
    assert [line.split()[:4] for line in table[1:]] == [["speech", "2", "100", "3"], ["vision", "3", "9", "1"]]
    assert "0 bytes / 2.0 GiB" in table[2] and "0 / 5" in table[2]

    db = session_factory(make_engine(env["QAT_DATABASE_URL"]))
    assert authenticate(db, first["token"]) is None
    team = authenticate(db, rotated["token"])
    assert team is not None and team.name == "vision"


@pytest.mark.parametrize(
    ("args", "line"),
    [
        (("admin", "create-team", "dup"), "error [CONFLICT] name: team 'dup' already exists"),
        (("admin", "create-team", "bad name"), "error [INVALID_ARGUMENT] name: bad team name"),
        (("admin", "create-team", "alpha\n"), "error [INVALID_ARGUMENT] name: bad team name 'alpha\\n'"),
        (
            ("admin", "create-team", "big", "--max-queued", "3000000000"),
            "error [INVALID_ARGUMENT] max_queued: max_queued must be 1 to 1000000, got 3000000000",
        ),
        (
            ("admin", "set-team", "dup", "--weight", "99999999999"),
            "error [INVALID_ARGUMENT] weight: weight must be 1 to 1000, got 99999999999",
        ),
        (
            ("admin", "set-team", "dup", "--max-storage", "lots"),
            "error [INVALID_ARGUMENT] --max-storage: could not parse value and unit from byte string, got 'lots'; "
            "use bytes or a unit, e.g. 524288000, 500MiB or 2GiB",
        ),
        (
            ("admin", "create-team", "big", "--max-storage", "2000TiB"),
            "error [INVALID_ARGUMENT] max_storage_bytes: max_storage_bytes must be 1 to 1125899906842624",
        ),
        (("admin", "create-token", "ghost"), "error [NOT_FOUND] team: no team named 'ghost'"),
        (("admin", "revoke-token", "qat_nope"), "error [NOT_FOUND] prefix: no token with prefix 'qat_nope'"),
        (("admin", "set-team", "ghost", "--weight", "2"), "error [NOT_FOUND] name: no team named 'ghost'"),
    ],
)
def test_mistakes_are_one_line_and_status_2(team_dup_env: dict[str, str], args: tuple[str, ...], line: str) -> None:
    run = qat(team_dup_env, *args)
    assert run.returncode == 2
    assert run.stderr.startswith(line) and len(run.stderr.strip().splitlines()) == 1


def test_bad_setting_names_the_variable(env: dict[str, str]) -> None:
    run = qat({**env, "QAT_DATABASE_URL": "mysql://u@h/db"}, "db", "upgrade")
    assert run.returncode == 2
    assert run.stderr.startswith("error [BAD_SETTING] QAT_DATABASE_URL: ")


def test_unreachable_database(env: dict[str, str]) -> None:
    run = qat({**env, "QAT_DATABASE_URL": "postgresql://nobody@127.0.0.1:9/none"}, "admin", "list-teams")
    assert run.returncode == 2
    assert run.stderr.startswith("error [DATABASE_UNAVAILABLE] QAT_DATABASE_URL: ")
