"""What a connector author imports: the one public module of the connector SDK.

Everything a connector package needs comes from here; the modules under
``broker.core`` are the broker's own and may change between versions::

    from broker.connector import (
        BoundAction, Connector, DeliveryRejected, DeliveryResult, packaged_manifest,
    )

    class AcmeChat(Connector):
        MANIFEST = packaged_manifest("acme_chat")  # acme_chat/manifest.toml

        def deliver(self, action, payload, client): ...

The hook base class
    :class:`Connector`; override the hooks you need (``authorize_params``,
    ``check_connection``, ``deliver``, ``retry_delay``, ``before_revoke``) with the
    base class's parameters: the broker refuses at load a connector whose hook
    takes other parameters.
What hooks get and return
    :class:`BoundAction` (an action with its URL filled in), :class:`DeliveryResult`.
Errors a hook may raise
    :class:`DeliveryRejected` (the third party refused the data),
    :class:`TokenRejected` (it refused the token), :class:`InvalidInput` (a
    connection's settings do not fit, e.g. the repository does not exist).
Helpers
    :func:`packaged_manifest` (the ``manifest.toml`` beside the code),
    :func:`provider_message` and :func:`response_id` (read a third party's answer),
    :class:`Manifest` (for a ``MANIFEST`` built in Python).

The manifest format has a JSON Schema: ``docs/manifest.schema.json``.
"""

from __future__ import annotations

from broker.core.connector import (
    BoundAction,
    Connector,
    DeliveryResult,
    packaged_manifest,
    provider_message,
    response_id,
)
from broker.core.errors import DeliveryRejected, InvalidInput, TokenRejected
from broker.core.manifest import Manifest

__all__ = [
    "BoundAction",
    "Connector",
    "DeliveryRejected",
    "DeliveryResult",
    "InvalidInput",
    "Manifest",
    "TokenRejected",
    "packaged_manifest",
    "provider_message",
    "response_id",
]
