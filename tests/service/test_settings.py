"""Settings: embedded defaults under ./var, parsed values, and errors that name the variable."""

from __future__ import annotations

from pathlib import Path

import pytest

from service.errors import BadSetting
from service.settings import LocalArtifacts, S3Artifacts, Settings


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
            "QAT_MAX_DATA_BYTES": "100M",
            "QAT_MAX_CONFIG_BYTES": "4096",
            "QAT_LEASE_SECONDS": "30",
            "QAT_MAX_ATTEMPTS": "5",
            "QAT_CHILD_MEMORY_BYTES": "8GiB",
            "QAT_CHILD_CPU_SECONDS": "7200",
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
        ("QAT_S3_ENDPOINT_URL", "minio:9000", "http:// or https://"),
        ("QAT_MAX_MODEL_BYTES", "lots", "positive size"),
        ("QAT_MAX_DATA_BYTES", "0", "positive size"),
        ("QAT_LEASE_SECONDS", "1.5", "positive whole number"),
        ("QAT_CHILD_CPU_SECONDS", "0", "positive whole number"),
        ("QAT_MAX_ATTEMPTS", "-1", "positive whole number"),
    ],
)
def test_bad_values_name_the_variable(tmp_path: Path, variable: str, value: str, words: str) -> None:
    with pytest.raises(BadSetting) as info:
        Settings.from_env({variable: value}, cwd=tmp_path)
    assert (info.value.code, info.value.field) == ("BAD_SETTING", variable)
    assert words in info.value.message
    assert str(info.value).startswith(f"[BAD_SETTING] {variable}: ")
