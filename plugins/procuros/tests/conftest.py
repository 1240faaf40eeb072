"""Fixtures of the Procuros plugin's tests: a running sandbox and the OpenAPI validators.

The OpenAPI description is the copy in ``tests/data/`` (see the README there), so the tests
run from a clean clone without ``shared/``. Needs the ``test`` extra (openapi-schema-validator,
pyyaml).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from docrelay_procuros.sandbox import ProcurosSandbox
from openapi_schema_validator import OAS30Validator

SPEC_PATH = Path(__file__).parent / "data" / "procuros-openapi-v2.yaml"
TOKEN = "procuros-test-token"


@functools.cache
def spec() -> dict[str, Any]:
    with SPEC_PATH.open(encoding="utf-8") as f:
        data: dict[str, Any] = yaml.safe_load(f)
    return data


def _validator(schema: dict[str, Any]) -> OAS30Validator:
    # The operation schemas refer to "#/components/schemas/..."; give them the components.
    return OAS30Validator({**schema, "components": spec()["components"]})


def schema_errors(schema: dict[str, Any], instance: Any) -> list[str]:
    """Every violation of *schema* (an OpenAPI 3.0 schema of the spec) by *instance*."""
    return [
        f"{'/'.join(str(p) for p in e.absolute_path)}: {e.message[:300]}"
        for e in _validator(schema).iter_errors(instance)
    ]


def request_schema(path: str, method: str) -> dict[str, Any]:
    op = spec()["paths"][path][method.lower()]
    schema: dict[str, Any] = op["requestBody"]["content"]["application/json"]["schema"]
    return schema


def response_schema(path: str, method: str, status: int) -> dict[str, Any]:
    """The schema of the answer *status* to *method path*, with 4XX/5XX ranges as the spec has."""
    responses = spec()["paths"][path][method.lower()]["responses"]
    entry = responses.get(str(status)) or responses.get(f"{str(status)[0]}XX")
    assert entry is not None, f"{method} {path} documents no {status}"
    schema: dict[str, Any] = entry["content"]["application/json"]["schema"]
    return schema


def validate_request(path: str, method: str, body: Any) -> None:
    errors = schema_errors(request_schema(path, method), body)
    assert not errors, errors


def validate_response(path: str, method: str, status: int, body: Any) -> None:
    errors = schema_errors(response_schema(path, method, status), body)
    assert not errors, errors


@pytest.fixture(scope="module")
def _shared_sandbox() -> Iterator[ProcurosSandbox]:
    # One server per module: stopping one costs half a second (the server's poll interval).
    sb = ProcurosSandbox(api_token=TOKEN)
    sb.start()
    yield sb
    sb.stop()


@pytest.fixture
def sandbox_factory(_shared_sandbox: ProcurosSandbox) -> Callable[..., ProcurosSandbox]:
    """The module's sandbox, reset, with *options* over the defaults and no faults."""

    def make(**options: Any) -> ProcurosSandbox:
        sb = _shared_sandbox
        unknown = set(options) - set(ProcurosSandbox.options)
        if unknown:
            raise ValueError(f"unknown option(s) {unknown}")
        sb.reset()
        sb.set_faults([])
        sb.config.clear()
        sb.config.update({**ProcurosSandbox.options, "api_token": TOKEN, **options})
        return sb

    return make


@pytest.fixture
def sandbox(sandbox_factory: Callable[..., ProcurosSandbox]) -> ProcurosSandbox:
    return sandbox_factory()


@pytest.fixture
def validators() -> Any:
    """The validation helpers, for test modules (conftest is not importable by name)."""

    class V:
        request = staticmethod(validate_request)
        response = staticmethod(validate_response)
        errors = staticmethod(schema_errors)
        response_schema = staticmethod(response_schema)
        spec = staticmethod(spec)

    return V
