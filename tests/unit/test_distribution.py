"""The distribution: ranges in pyproject, exact versions in requirements.lock, a client that installs alone."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tomllib
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]
CLIENT_DEPENDENCIES = {"httpx", "pydantic", "rich", "click"}


def lock() -> dict[str, str]:
    pins = {}
    for line in (ROOT / "requirements.lock").read_text().splitlines():
        if line and not line.startswith("#"):
            name, _, version = line.partition("==")
            assert version, f"requirements.lock: {line!r} is not an exact pin"
            pins[canonicalize_name(name)] = version
    return pins


def project() -> dict[str, object]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def requirements() -> list[Requirement]:
    table = project()
    listed = list(table["dependencies"])  # type: ignore[call-overload]
    for extra in table["optional-dependencies"].values():  # type: ignore[attr-defined]
        listed += extra
    return [Requirement(r) for r in listed if not r.startswith("qat-service")]


def test_pyproject_holds_ranges_and_the_lock_satisfies_every_one() -> None:
    pins = lock()
    for requirement in requirements():
        version = pins.get(canonicalize_name(requirement.name))
        assert version, f"{requirement.name} is in pyproject.toml but not in requirements.lock (run make lock)"
        assert requirement.specifier.contains(version), (
            f"requirements.lock has {requirement.name}=={version}, outside {requirement}"
        )
        assert "==" not in str(requirement.specifier), (
            f"{requirement}: pin exact versions in requirements.lock, not pyproject"
        )


def test_this_environment_is_the_lock() -> None:
    """A package installed by hand, or a lock not rewritten after an upgrade, fails here."""
    pins = lock()
    installed = {
        canonicalize_name(d.metadata["Name"]): d.version.split("+")[0]
        for d in metadata.distributions()
        if canonicalize_name(d.metadata["Name"]) not in {"pip", "setuptools", "wheel", "qat-service"}
    }
    assert installed == pins


def _closure(names: set[str]) -> set[str]:
    """Distributions that installing ``names`` brings, by their installed metadata (no extras)."""
    seen: set[str] = set()
    todo = [canonicalize_name(n) for n in names]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        for raw in metadata.requires(name) or []:
            requirement = Requirement(raw)
            if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
                todo.append(canonicalize_name(requirement.name))
    return seen


def test_the_base_install_is_the_client_and_the_client_needs_nothing_else() -> None:
    base = {Requirement(r).name for r in project()["dependencies"]}  # type: ignore[attr-defined]
    assert base == CLIENT_DEPENDENCIES
    code = (
        "import json, sys\n"
        "from importlib import metadata\n"
        "before = set(sys.modules)  # what site.py loaded (an editable install's finder)\n"
        "import service.client, service.client.cli\n"
        "from workers.cli import main\n"
        "for command in ('submit', 'status', 'list', 'wait', 'download', 'logs', 'report', 'cancel', 'delete'):\n"
        "    main.get_command(None, command)\n"
        "tops = {m.split('.')[0] for m in set(sys.modules) - before} - set(sys.stdlib_module_names)\n"
        "owners = metadata.packages_distributions()\n"
        "print(json.dumps(sorted({d for t in tops for d in owners.get(t, [])})))\n"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    imported = {canonicalize_name(d) for d in json.loads(run.stdout)}
    extra = imported - _closure(CLIENT_DEPENDENCIES) - {"qat-service"}
    assert not extra, f"the client commands import {sorted(extra)}, which `pip install qat-service` does not bring"


def test_the_library_and_client_claim_every_python_they_support() -> None:
    table = project()
    assert table["requires-python"] == ">=3.11"
    versions = {re.sub(r".*:: ", "", c) for c in table["classifiers"]}  # type: ignore[attr-defined]
    assert {"3.11", "3.12", "3.13"} <= versions
