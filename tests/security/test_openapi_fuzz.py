"""Schemathesis against ``/v1/openapi.json``: generated requests never cause a 500, answers match the document.

The app runs in process (schemathesis' WSGI loader) on a real migrated database and a
local artifact store; every operation gets a bounded number of generated requests,
authenticated as a real team: valid ones and (negative mode) ones that break the schema. The examples are capped so the whole run stays well under a minute.
"""

from __future__ import annotations

import itertools
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from service.teams import create_team

EXAMPLES = 15
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]


@pytest.mark.parametrize("backend", ["postgresql"])
@pytest.mark.parametrize("artifact_store", ["local"], indirect=True)
def test_no_server_errors_and_answers_match_the_schema(api: Any) -> None:
    schema = schemathesis.openapi.from_wsgi("/v1/openapi.json", api.app)
    # a storage quota above the largest upload in parts (256 GiB): a declared size over the quota is answered
    # 507 STORAGE_QUOTA, the team's limit, which schemathesis would count as a server error
    team = create_team(api.services.db, "fuzz", max_storage_bytes=1 << 40)
    headers = {"Authorization": f"Bearer {team.token}"}
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 12

    for operation, mode in itertools.product(operations, GenerationMode):
        if mode is GenerationMode.NEGATIVE and not (list(operation.iter_parameters()) or list(operation.body)):
            continue  # nothing to break: /healthz, /readyz, /metrics

        @given(case=operation.as_strategy(mode))
        @settings(max_examples=EXAMPLES, deadline=None, database=None, suppress_health_check=list(HealthCheck))
        def call(case: Any) -> None:
            case.call_and_validate(headers=headers, checks=CHECKS)

        call()
