"""The OpenAPI 3.1 document: valid, and complete for a client generator: every /v1
operation has a stable operationId, a typed answer, its roles and the broker's error
shape for each error it can give."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from fastapi import FastAPI
from openapi_spec_validator import validate

from broker.runtime import build_runtime
from broker.web.api.error_responses import error_codes
from broker.web.app import create_app
from broker.web.openapi import api_routes

CAMEL = re.compile(r"^[a-z]+(?:[A-Z][a-z0-9]*)*$")
ERROR_REF = {"$ref": "#/components/schemas/ErrorBody"}


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FastAPI]:
    from broker.settings import Settings

    tmp = tmp_path_factory.mktemp("openapi")
    settings = Settings(home=tmp / "home", database_url=f"sqlite:///{tmp}/broker.db")
    rt = build_runtime(settings, upgrade=True)
    yield create_app(rt)
    rt.close()


@pytest.fixture(scope="module")
def doc(app: FastAPI) -> dict:
    return app.openapi()


def _v1_routes(app: FastAPI) -> list:
    routes = [r for r in api_routes(app) if r.path.startswith("/v1")]
    assert len(routes) > 30  # the walk sees the included routers' routes
    return routes


def test_the_document_is_valid_openapi_3_1(doc: dict) -> None:
    assert doc["openapi"].startswith("3.1")
    validate(doc)  # raises on any violation


def test_every_v1_route_has_a_camel_case_operation_id_and_a_response_model(app: FastAPI) -> None:
    ids, untyped, unnamed = [], [], []
    for route in _v1_routes(app):
        name = f"{sorted(route.methods)} {route.path}"
        if not route.operation_id or not CAMEL.match(route.operation_id):
            unnamed.append(name)
        ids.append(route.operation_id)
        declared = {
            str(status): entry
            for status, entry in (route.responses or {}).items()
            if str(status).startswith("2") and ("model" in entry or "content" in entry)
        }
        # a JSON answer is a pydantic model; a text one (CSV, a signed note) declares its
        # media types; a 204 has no body
        if route.response_model is None and not declared and route.status_code != 204:
            untyped.append(name)
    assert unnamed == []
    assert untyped == []
    assert len(ids) == len(set(ids)), "operationIds are unique"


def test_stable_operation_ids(doc: dict) -> None:
    ops = {
        op["operationId"]: (method, path)
        for path, item in doc["paths"].items()
        for method, op in item.items()
    }
    assert ops["createTransfer"] == ("post", "/v1/connections/{connection_id}/transfers")
    assert ops["listTransfers"] == ("get", "/v1/transfers")
    assert ops["createConnectSession"] == ("post", "/v1/connect-sessions")
    assert ops["revokeConnection"] == ("delete", "/v1/connections/{connection_id}")


def test_bearer_security_and_roles_on_every_v1_operation(doc: dict) -> None:
    assert doc["components"]["securitySchemes"]["bearerAuth"] == {
        "type": "http",
        "scheme": "bearer",
        "description": doc["components"]["securitySchemes"]["bearerAuth"]["description"],
    }
    for path, item in doc["paths"].items():
        if not path.startswith("/v1"):
            continue
        for method, op in item.items():
            assert op["security"] == [{"bearerAuth": []}], (method, path)
            assert op["x-roles"] in (["admin"], ["admin", "auditor"]), (method, path)
            assert op["description"].startswith("Roles: "), (method, path)
            assert "401" in op["responses"]
            # 403 forbidden exactly where an auditor key is refused
            forbidden = "forbidden" in _codes(op, "403")
            assert forbidden == (op["x-roles"] == ["admin"]), (method, path)
    transfers = doc["paths"]["/v1/transfers"]["get"]
    assert transfers["x-roles"] == ["admin", "auditor"]
    assert doc["paths"]["/v1/connections/{connection_id}"]["delete"]["x-roles"] == ["admin"]


def _codes(op: dict, status: str) -> list[str]:
    entry = op["responses"].get(status, {})
    return list(entry.get("content", {}).get("application/json", {}).get("examples", {}))


def test_every_error_answer_is_the_broker_error_shape(doc: dict) -> None:
    assert "HTTPValidationError" not in doc["components"]["schemas"]
    detail = doc["components"]["schemas"]["ErrorDetail"]
    assert set(detail["required"]) == {"code", "message", "details"}
    assert detail["properties"]["code"]["examples"] == list(error_codes())
    for path, item in doc["paths"].items():
        for method, op in item.items():
            for status, entry in op["responses"].items():
                if status[0] not in "45":
                    continue
                content = entry["content"]
                assert list(content) == ["application/json"], (method, path, status)
                assert content["application/json"]["schema"] == ERROR_REF
                examples = content["application/json"]["examples"]
                for code, example in examples.items():
                    assert error_codes()[code] == int(status), (method, path, code)
                    assert example["value"]["error"]["code"] == code
            assert "500" in op["responses"], (method, path)
    create = doc["paths"]["/v1/connections/{connection_id}/transfers"]["post"]
    assert _codes(create, "403") == [
        "outside_grant",
        "purpose_not_declared",
        "forbidden_use",
        "user_objected",
        "forbidden",  # an auditor key
    ]
    assert _codes(create, "409") == ["connection_not_active", "idempotency_key_reused"]
    assert "invalid_input" in _codes(create, "422")


def test_the_hot_path_is_documented_without_pydantic_on_it(app: FastAPI, doc: dict) -> None:
    """``createTransfer`` reads its body by hand and answers a JSONResponse: the
    document still has its body, headers and answers."""
    (route,) = [r for r in _v1_routes(app) if r.operation_id == "createTransfer"]
    assert route.response_model is None
    assert route.body_field is None  # FastAPI parses no body for it
    op = doc["paths"]["/v1/connections/{connection_id}/transfers"]["post"]
    body = op["requestBody"]["content"]["application/json"]["schema"]
    assert body == {"$ref": "#/components/schemas/TransferCreate"}
    fields = doc["components"]["schemas"]["TransferCreate"]["properties"]
    assert {"action", "data", "purpose", "mode", "use", "idempotency_key"} <= set(fields)
    assert fields["mode"]["enum"] == ["reject", "drop"]
    assert fields["idempotency_key"]["deprecated"] is True
    assert doc["components"]["schemas"]["TransferCreate"]["examples"]
    headers = {p["name"] for p in op["parameters"] if p["in"] == "header"}
    assert headers == {"Idempotency-Key", "Prefer"}
    for status in ("200", "201", "202"):
        schema = op["responses"][status]["content"]["application/json"]["schema"]
        assert schema == {"$ref": "#/components/schemas/Transfer"}


def test_bodies_read_by_hand_are_documented(doc: dict) -> None:
    put = doc["paths"]["/v1/users/{user_id}/preferences"]["put"]
    assert put["requestBody"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/PreferencesUpdate"
    }
    post = doc["paths"]["/v1/disclosures"]["post"]
    assert post["requestBody"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/DisclosureCreate"
    }


def test_docs_page_lists_every_operation_without_script(app: FastAPI, doc: dict) -> None:
    from fastapi.testclient import TestClient

    with TestClient(app) as client:
        page = client.get("/docs")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert "<script" not in page.text  # nothing to vendor, nothing the CSP refuses
    assert "script-src" not in page.headers["content-security-policy"]
    ids = [op["operationId"] for item in doc["paths"].values() for op in item.values()]
    for op_id in ids:
        assert f'id="op-{op_id}"' in page.text
    assert 'id="schema-TransferCreate"' in page.text
    assert "<code>idempotency_key_reused</code>" in page.text
