"""Schemathesis over /api/v1/openapi.json against a running server: no 5xx, and every
response matches the document (status code, content type, body schema). A bounded run
here; FUZZ_EXAMPLES raises it (docs/security.md has the long command)."""

from __future__ import annotations

import os

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, given, settings

from tests.conftest import PASSWORD
from tests.interop.conftest import running_server
from tests.mail_server import MailServer

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "8"))
# Business rules the document cannot express (a taken username, a redirect URI that is a
# valid string but not https) reject schema-valid data by design, so that check is off.
CHECKS = [
    schemathesis.checks.not_a_server_error,
    schemathesis.checks.status_code_conformance,
    schemathesis.checks.content_type_conformance,
    schemathesis.checks.response_schema_conformance,
    schemathesis.checks.response_headers_conformance,
    schemathesis.checks.negative_data_rejection,
]


@pytest.fixture(scope="module")
def fuzz_server(tmp_path_factory, backend):
    # With mail, so the routes that send it (password reset, verification) do their work
    # rather than answer 503 MAIL_UNAVAILABLE.
    mail = MailServer()
    mail.start()
    smtp = {f"FLUXER_{name.upper()}": str(value) for name, value in mail.settings().items()}
    try:
        with running_server(tmp_path_factory.mktemp("fuzz"), backend, **smtp) as base:
            session = requests.post(f"{base}/api/v1/auth/register", timeout=10, json={
                "username": "fuzzer", "email": "fuzz@example.com", "password": PASSWORD}).json()
            yield base, session["token"]
    finally:
        mail.stop()


def test_api_conforms_to_its_document(fuzz_server):
    base, token = fuzz_server
    schema = schemathesis.openapi.from_url(f"{base}/api/v1/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) > 40
    failures: list[str] = []
    for operation in operations:
        @given(case=operation.as_strategy())
        @settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        def exercise(case):
            case.call_and_validate(base_url=base, headers={"Authorization": token}, checks=CHECKS)

        try:
            exercise()
        except Exception as exc:  # collect every operation's failure, then report them together
            failures.append(f"{operation.method.upper()} {operation.path}: {str(exc)[:1500]}")
    assert not failures, "\n\n".join(failures)
