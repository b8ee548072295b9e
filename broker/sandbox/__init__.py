"""The broker's built-in sandbox third party: a real OAuth 2 provider and a small API.

``broker demo`` mounts it at ``/sandbox``; integration tests run it standalone with uvicorn
on a loopback port. Everything is in memory, held by one :class:`SandboxProvider`::

    provider = SandboxProvider(clients=[SandboxClient("demo", "secret", [callback_url])])
    app = create_sandbox_app(provider)
"""

from .app import create_sandbox_app
from .models import ReceivedRequest, SandboxClient
from .provider import SandboxProvider

__all__ = ["ReceivedRequest", "SandboxClient", "SandboxProvider", "create_sandbox_app"]
