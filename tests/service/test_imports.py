"""The service's data layer and its commands never import torch (the API process must not)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

QAT = Path(sys.executable).parent / "qat"


def _torch_free(code: str) -> None:
    run = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr


def test_data_layer_does_not_import_torch() -> None:
    _torch_free(
        "import sys\n"
        "import service.jobs, service.artifacts, service.db, service.teams, service.datasets, service.db.migrate\n"
        "import service.settings, service.ops.cli, workers.cli\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
    )


def test_admin_and_db_commands_do_not_import_torch(tmp_path: Path) -> None:
    _torch_free(
        "import os, sys\n"
        f"os.environ['QAT_DATABASE_URL'] = 'sqlite:///{tmp_path / 'qat.db'}'\n"
        "from workers.cli import main\n"
        "main(['db', 'upgrade'], standalone_mode=False)\n"
        "main(['admin', 'create-team', 'ml', '--json'], standalone_mode=False)\n"
        "main(['admin', 'list-teams'], standalone_mode=False)\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
    )


def test_quantize_is_still_a_command() -> None:
    run = subprocess.run([str(QAT), "quantize", "--help"], check=False, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert "--data" in run.stdout


def test_the_contract_and_the_client_need_neither_torch_nor_the_server_stack() -> None:
    _torch_free(
        "import sys\n"
        "import service.contract, service.client, service.client.cli, service.client.view\n"
        "heavy = [m for m in ('torch', 'flask', 'sqlalchemy', 'celery', 'numpy', 'boto3') if m in sys.modules]\n"
        "assert not heavy, f'imported {heavy}'\n"
    )
