"""Settings: embedded defaults under ./var, parsed values, errors that name the variable, the README's table."""

from __future__ import annotations

from pathlib import Path

import pytest

from service.errors import BadSetting
from service.settings import LocalArtifacts, S3Artifacts, Settings, markdown_table, parse_size

README = Path(__file__).resolve().parents[2] / "README.md"


def test_defaults_live_under_var(tmp_path: Path) -> None:
    settings = Settings.from_env({}, cwd=tmp_path)
    var = tmp_path.resolve() / "var"
    assert settings.database_url == f"sqlite:///{var / 'qat.db'}"
    assert settings.broker_url == f"filesystem://{var / 'broker'}"
    assert settings.broker_folder == var / "broker"
    assert settings.artifacts == LocalArtifacts(var / "artifacts")
    assert settings.s3_endpoint_url is None
    assert (settings.lease_seconds, settings.max_attempts) == (60, 3)
    assert settings.max_model_bytes == 512 << 20 and settings.max_config_bytes == 1 << 20
    assert settings.child_memory_bytes is None and settings.child_cpu_seconds is None


def test_values_are_parsed(tmp_path: Path) -> None:
    settings = Settings.from_env(
        {
            "QAT_DATABASE_URL": "postgresql://qat@db.internal/qat",
            "QAT_BROKER_URL": "redis://127.0.0.1:6379/0",
            "QAT_ARTIFACTS": "s3://qat-artifacts/prod/v1/",
            "QAT_S3_ENDPOINT_URL": "http://minio:9000",
            "QAT_MAX_MODEL_BYTES": "2GiB",
            "QAT_MAX_DATA_BYTES": "100MiB",
            "QAT_MAX_CONFIG_BYTES": "4096",
            "QAT_LEASE_SECONDS": "30",
            "QAT_MAX_ATTEMPTS": "5",
            "QAT_CHILD_MEMORY_BYTES": "8GiB",
            "QAT_CHILD_CPU_SECONDS": "7200",
            "QAT_DOWNLOAD_REDIRECT": "off",
            "QAT_SANDBOX": "none",
            "QAT_UNRELATED": "ignored",
        },
        cwd=tmp_path,
    )
    assert settings.database_url == "postgresql://qat@db.internal/qat"
    assert settings.broker_folder is None
    assert settings.artifacts == S3Artifacts("qat-artifacts", "prod/v1")
    assert settings.s3_endpoint_url == "http://minio:9000"
    assert (settings.max_model_bytes, settings.max_data_bytes, settings.max_config_bytes) == (2 << 30, 100 << 20, 4096)
    assert settings.child_memory_bytes == 8 << 30 and settings.child_cpu_seconds == 7200
    assert (settings.lease_seconds, settings.max_attempts) == (30, 5)
    assert (settings.download_redirect, settings.sandbox) == (False, "none")


def test_sizes_are_pydantic_byte_sizes() -> None:
    """IEC units count in 1024s, SI units (and bare K/M/G/T) in 1000s."""
    assert parse_size("2GiB", "QAT_X") == 2 << 30
    assert parse_size("2G", "QAT_X") == parse_size("2GB", "QAT_X") == 2_000_000_000
    assert parse_size("1.5 KiB", "QAT_X") == 1536
    assert parse_size("4096", "QAT_X") == 4096


def test_postgres_alias_is_accepted(tmp_path: Path) -> None:
    assert Settings.from_env({"QAT_DATABASE_URL": "postgres://qat@db/qat"}, cwd=tmp_path).database_url.startswith(
        "postgres://"
    )


def test_relative_artifact_dir_and_empty_values(tmp_path: Path) -> None:
    settings = Settings.from_env({"QAT_ARTIFACTS": "data/arts", "QAT_S3_ENDPOINT_URL": "  "}, cwd=tmp_path)
    assert settings.artifacts == LocalArtifacts(tmp_path.resolve() / "data" / "arts")
    assert settings.s3_endpoint_url is None


def test_reads_os_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QAT_LEASE_SECONDS", "17")
    assert Settings.from_env().lease_seconds == 17


@pytest.mark.parametrize(
    ("variable", "value", "words"),
    [
        ("QAT_DATABASE_URL", "not a url", "not a database URL"),
        ("QAT_DATABASE_URL", "mysql://u@h/db", "'mysql' is not supported"),
        ("QAT_BROKER_URL", "localhost:6379", "not a broker URL"),
        ("QAT_BROKER_URL", "filesystem://var/broker", "absolute folder"),
        ("QAT_ARTIFACTS", "gs://bucket/x", "unsupported artifact store"),
        ("QAT_ARTIFACTS", "s3://AB/x", "not a valid bucket name"),
        ("QAT_S3_ENDPOINT_URL", "minio:9000", "match pattern '^https?://', got 'minio:9000'"),
        ("QAT_MAX_MODEL_BYTES", "lots", "got 'lots'; use bytes or a unit, e.g. 524288000, 500MiB or 2GiB"),
        ("QAT_MAX_DATA_BYTES", "0", "greater than 0, got '0'"),
        ("QAT_CHILD_MEMORY_BYTES", "8XB", "could not interpret byte unit: XB, got '8XB'; use bytes or a unit"),
        ("QAT_LEASE_SECONDS", "1.5", "valid integer"),
        ("QAT_CHILD_CPU_SECONDS", "0", "greater than 0"),
        ("QAT_MAX_ATTEMPTS", "-1", "greater than 0, got '-1'"),
        ("QAT_DOWNLOAD_REDIRECT", "maybe", "valid boolean"),
        ("QAT_SANDBOX", "docker", "'bwrap' or 'none'"),
    ],
)
def test_bad_values_name_the_variable(tmp_path: Path, variable: str, value: str, words: str) -> None:
    with pytest.raises(BadSetting) as info:
        Settings.from_env({variable: value}, cwd=tmp_path)
    assert (info.value.code, info.value.field) == ("BAD_SETTING", variable)
    assert words in info.value.message
    assert str(info.value).startswith(f"[BAD_SETTING] {variable}: ")


def test_readme_table_is_generated_from_the_fields() -> None:
    text = README.read_text()
    start = text.index("\n", text.index("<!-- settings table")) + 1
    table = text[start : text.index("<!-- end of settings table -->")].strip() + "\n"
    assert table == markdown_table(), "README.md's settings table is stale: paste `python -m service.settings` into it"


def test_every_field_is_documented() -> None:
    assert all(field.description for field in Settings.model_fields.values())
