"""The public paths the broker hands out (broker.core.routes) are the routers' paths:
a route renamed in the web layer without the table fails here, not at a provider."""

from __future__ import annotations

from broker.core import routes
from broker.core.catalog import default_catalog
from broker.demo import sandbox_connector
from broker.runtime import build_runtime
from broker.web.app import create_app


def test_the_table_names_the_routes_the_app_serves(make_settings) -> None:
    settings = make_settings(base_url="https://broker.example.com")
    connector = sandbox_connector(default_catalog(), "https://sandbox.example.com")
    rt = build_runtime(settings, builtins=[connector], plugins=[], upgrade=True)
    try:
        app = create_app(rt)
    finally:
        rt.close()
    x = {"connector_id": "x"}
    assert app.url_path_for("choose") == routes.CONNECT
    for name in ("consent_page", "consent_submit"):
        assert app.url_path_for(name, **x) == routes.CONNECT_TO.format(**x)
    assert app.url_path_for("my_integrations") == routes.ME
    assert app.url_path_for("callback") == routes.OAUTH_CALLBACK
    assert app.url_path_for("connector_callback", **x) == routes.OAUTH_CALLBACK_FOR.format(**x)
    # and the URLs built from them
    assert settings.callback_url == "https://broker.example.com/oauth/callback"
    assert (
        settings.connector_callback_url("sandbox")
        == "https://broker.example.com/oauth/callback/sandbox"
    )
