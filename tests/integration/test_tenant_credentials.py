"""Per-tenant OAuth credentials over real sockets: the sandbox provider registers a
second client (a customer's own OAuth app); a connect session naming that tenant
authorises, refreshes and revokes with it; without a tenant the environment's client
is still used; secrets are sealed and never shown."""

from __future__ import annotations

from sqlmodel import Session, select

from broker.core.vault import TokenVault
from broker.demo import SANDBOX_CLIENT_ID
from broker.flows.rotation import rotate_token_key
from broker.flows.tokens import refresh_access_token
from broker.sandbox.models import SandboxClient
from broker.store.credential_models import ConnectorCredential
from broker.store.models import ConnectionToken
from tests.integration.conftest import RETURN_URL, Browser, Stack, connect, query

TENANT = "customer-42"
CLIENT_ID = "customer-42-app"
CLIENT_SECRET = "customer-42-secret-value"
CREDENTIALS = "/v1/connectors/sandbox/credentials"


def _second_client(stack: Stack) -> None:
    """The customer's own app at the third party, as its developer console makes it."""
    callback = stack.rt.settings.callback_url
    stack.provider.add_client(
        SandboxClient(
            client_id=CLIENT_ID,
            client_secret=CLIENT_SECRET,
            redirect_uris=[f"{callback}/sandbox", callback],
        )
    )


def _register(stack: Stack, secret: str = CLIENT_SECRET, status: int = 201) -> dict:
    with stack.api() as api:
        resp = api.post(
            CREDENTIALS, json={"tenant": TENANT, "client_id": CLIENT_ID, "client_secret": secret}
        )
    assert resp.status_code == status, resp.text
    assert secret not in resp.text
    return resp.json()


def _connect_tenant(stack: Stack, browser: Browser, user_id: str) -> tuple[str, str]:
    """The connect flow for a session naming the tenant; (connection id, authorize URL)."""
    session = stack.connect_session(user_id, tenant=TENANT)
    to_provider = browser.approve(session["url"], [])
    assert to_provider.status_code == 303, to_provider.text
    authorize_url = to_provider.headers["location"]
    back = browser.provider_decides(authorize_url, allow=True)
    assert back.status_code in (302, 303), back.text
    done = browser.get(back.headers["location"])
    assert done.status_code == 303, done.text
    assert done.headers["location"].startswith(RETURN_URL)
    params = query(done.headers["location"])
    assert params["status"] == "connected", params
    return params["connection_id"], authorize_url


def _tokens(stack: Stack, conn_id: str) -> tuple[str, str]:
    with Session(stack.rt.engine) as db:
        row = db.get(ConnectionToken, conn_id)
        assert row is not None and row.refresh_token is not None
        vault = stack.rt.vault
        return (
            vault.open(row.access_token, connection_id=conn_id, kind="access_token"),
            vault.open(row.refresh_token, connection_id=conn_id, kind="refresh_token"),
        )


def _issued_to(stack: Stack, access_token: str) -> str:
    issued = stack.provider.find_access_token(access_token)
    assert issued is not None
    return issued.client_id


def test_a_tenant_s_connection_uses_its_own_client_from_consent_to_revocation(
    stack: Stack, browser: Browser
) -> None:
    _second_client(stack)
    created = _register(stack)
    assert created["tenant"] == TENANT and created["client_id"] == CLIENT_ID
    assert "client_secret" not in created
    conn_id, authorize_url = _connect_tenant(stack, browser, "user-t")
    assert query(authorize_url)["client_id"] == CLIENT_ID
    access, _refresh = _tokens(stack, conn_id)
    assert _issued_to(stack, access) == CLIENT_ID  # the code was exchanged with its client
    with stack.api() as api:
        shown = api.get(f"/v1/connections/{conn_id}").json()
    assert shown["tenant"] == TENANT and shown["status"] == "active"
    # the environment's client stays the default
    other = connect(stack, browser, optional=[], user_id="user-d")
    assert _issued_to(stack, _tokens(stack, other)[0]) == SANDBOX_CLIENT_ID
    # refresh with the tenant's client (the sandbox refuses another client's token)
    fresh = refresh_access_token(stack.rt, conn_id, stale=access)
    assert fresh != access and _issued_to(stack, fresh) == CLIENT_ID
    assert stack.provider.token_requests.count("refresh_token") == 1
    rotated = _tokens(stack, conn_id)[1]
    assert stack.provider.is_active(rotated)
    # credentials in use are not deleted
    with stack.api() as api:
        refused = api.delete(f"{CREDENTIALS}/{TENANT}")
    assert refused.status_code == 409
    assert refused.json()["error"]["code"] == "conflict"
    # revocation at the provider with the tenant's client
    with stack.api() as api:
        revoked = api.delete(f"/v1/connections/{conn_id}")
    assert revoked.status_code == 200, revoked.text
    assert not stack.provider.is_active(fresh) and not stack.provider.is_active(rotated)
    assert "refresh_token" in stack.provider.revoked
    assert "failed" not in revoked.text
    with stack.api() as api:
        gone = api.delete(f"{CREDENTIALS}/{TENANT}")
        listed = api.get(CREDENTIALS).json()
    assert gone.status_code == 204
    assert listed == {"credentials": [], "next_cursor": None}


def test_credentials_are_sealed_listed_without_secret_replaced_and_resealed(
    stack: Stack, browser: Browser
) -> None:
    _second_client(stack)
    _register(stack, secret="first-secret-value")
    _register(stack, status=200)  # replaced: the right secret now
    with stack.api() as api:
        listed = api.get(CREDENTIALS)
    assert listed.status_code == 200
    (item,) = listed.json()["credentials"]
    assert item["tenant"] == TENANT and item["client_id"] == CLIENT_ID
    assert CLIENT_SECRET not in listed.text and "secret" not in item
    with Session(stack.rt.engine) as db:
        (row,) = db.exec(select(ConnectorCredential)).all()
    assert row.client_secret.startswith("v1.") and CLIENT_SECRET not in row.client_secret
    # broker keys rotate re-seals it: with the old keys gone, a tenant flow still works
    result = rotate_token_key(stack.rt, actor="test")
    assert result["resealed_client_secrets"] == 1
    with Session(stack.rt.engine) as db:
        (row,) = db.exec(select(ConnectorCredential)).all()
    assert TokenVault.key_id(row.client_secret) == result["new_key_id"]
    for kid in result["previous_key_ids"]:
        stack.rt.vault.ring.retire(kid)
    stack.rt.vault.path = None
    conn_id, _ = _connect_tenant(stack, browser, "user-r")
    assert _issued_to(stack, _tokens(stack, conn_id)[0]) == CLIENT_ID


def test_bad_credentials_and_sessions_are_refused_in_the_error_shape(stack: Stack) -> None:
    good = {"tenant": TENANT, "client_id": CLIENT_ID, "client_secret": CLIENT_SECRET}
    with stack.api() as api:
        unknown = api.post("/v1/connectors/nope/credentials", json=good)
        bad_tenant = api.post(CREDENTIALS, json={**good, "tenant": "has space"})
        bad_id = api.post(CREDENTIALS, json={**good, "client_id": "a b"})
        missing = api.post(CREDENTIALS, json={"tenant": TENANT, "client_id": CLIENT_ID})
        no_creds = api.post(
            "/v1/connect-sessions",
            json={"user_id": "u", "connector_id": "sandbox", "tenant": TENANT},
        )
        no_connector = api.post("/v1/connect-sessions", json={"user_id": "u", "tenant": TENANT})
        not_there = api.delete(f"{CREDENTIALS}/{TENANT}")
    with stack.api(stack.auditor_key) as api:
        auditor = api.post(CREDENTIALS, json=good)
        auditor_list = api.get(CREDENTIALS)
    assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "not_found"
    for resp, field in (
        (bad_tenant, "tenant"),
        (bad_id, "client_id"),
        (no_creds, "tenant"),
        (no_connector, "tenant"),
    ):
        assert resp.status_code in (400, 422), resp.text
        error = resp.json()["error"]
        assert error["code"] == "invalid_input" and field in resp.text
    assert missing.status_code == 422 and missing.json()["error"]["code"] == "invalid_input"
    assert not_there.status_code == 404
    assert auditor.status_code == 403 and auditor_list.status_code == 403
    assert auditor.json()["error"]["code"] == "forbidden"
    for resp in (bad_tenant, bad_id, auditor):
        assert CLIENT_SECRET not in resp.text


def test_the_migration_creates_what_the_models_declare(stack: Stack) -> None:
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext
    from sqlmodel import SQLModel

    def ours(diff: object) -> bool:
        return "connector_credentials" in repr(diff) or "'tenant'" in repr(diff)

    with stack.rt.engine.connect() as conn:
        ctx = MigrationContext.configure(conn, opts={"compare_type": True})
        diffs = [d for d in compare_metadata(ctx, SQLModel.metadata) if ours(d)]
    assert diffs == []
