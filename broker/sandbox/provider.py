"""The sandbox third party's state: registered clients, codes, tokens, received requests.

Everything lives in memory behind one re-entrant lock. The authorization server in
:mod:`broker.sandbox.server` holds that lock for a whole token or revocation exchange, so
checking and consuming a code or refresh token is atomic: two concurrent refreshes with the
same refresh token get one success and one ``invalid_grant``, as from a real provider.

Three groups of methods:

* set-up and inspection for tests and the demo page (``add_client``, ``received``,
  ``token_requests``, ``revoked``, ``is_active``);
* fault injection (``fail_token_endpoint``, ``fail_api``, ``fail_revocation``,
  ``fail_policy``, ``expire_access_tokens``) and versioned policy pages (``set_policy``);
* storage used by the authorization server and the API (everything else).
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Literal

from .models import AuthorizationCode, IssuedToken, ReceivedRequest, SandboxClient

__all__ = ["Fault", "FaultSite", "PolicyPage", "SandboxProvider"]

FaultSite = Literal["token", "api", "revocation", "privacy", "terms"]
_FAULT_SITES: tuple[FaultSite, ...] = ("token", "api", "revocation", "privacy", "terms")
PolicyPage = Literal["privacy", "terms"]
_POLICY_PAGES: dict[str, tuple[str, str]] = {
    "privacy": (
        "Sandbox Co. privacy policy",
        "Sandbox Co. is a pretend service inside the broker demo. It keeps what it "
        "receives in memory only, shows it on the demo page, and forgets it on restart.",
    ),
    "terms": (
        "Sandbox Co. terms of service",
        "For demonstration only. No warranty; nothing you send is kept.",
    ),
}


@dataclass(frozen=True)
class Fault:
    """A canned failure answer, injected in place of the real one."""

    status: int
    body: dict[str, object]
    headers: dict[str, str] = field(default_factory=dict)


def _default_fault_body(status: int) -> dict[str, object]:
    if status == 429:
        return {"error": "rate_limited"}
    return {"error": "server_error"}


class SandboxProvider:
    """In-memory, thread-safe state of the sandbox OAuth provider and API."""

    def __init__(
        self,
        *,
        clients: Iterable[SandboxClient] = (),
        access_token_ttl: int = 3600,
        user_id: str = "sandbox-user",
    ) -> None:
        self.access_token_ttl = access_token_ttl
        self.user_id = user_id
        #: Requests the API accepted, oldest first.
        self.received: list[ReceivedRequest] = []
        #: When set to an Event not yet set, the API stores each request and then holds
        #: its answer until the Event is set (at most 30 s): an answer lost in transit.
        self.answer_gate: threading.Event | None = None
        #: Likewise for the token endpoint: tokens are issued (a refresh rotates) at once,
        #: the answer waits for the Event.
        self.token_gate: threading.Event | None = None
        #: ``grant_type`` of every request that reached the token endpoint ("" if absent).
        self.token_requests: list[str] = []
        #: Kind ("access_token" / "refresh_token") of each token revoked through RFC 7009.
        self.revoked: list[str] = []
        self._lock = threading.RLock()
        self._clients: dict[str, SandboxClient] = {}
        self._codes: dict[str, AuthorizationCode] = {}
        self._used_codes: dict[str, str] = {}  # code -> grant_id, to detect replays
        self._by_access: dict[str, IssuedToken] = {}
        self._by_refresh: dict[str, IssuedToken] = {}
        self._faults: dict[FaultSite, deque[Fault]] = {site: deque() for site in _FAULT_SITES}
        #: The policy pages served at ``/privacy`` and ``/terms``: (title, body HTML),
        #: and how often each was changed (its ``ETag`` is ``"<page>-v<version>"``).
        self.policy_pages: dict[str, tuple[str, str]] = dict(_POLICY_PAGES)
        self.policy_versions: dict[str, int] = {page: 1 for page in _POLICY_PAGES}
        #: When set to an Event not yet set, policy pages are answered only once it is
        #: set (at most 30 s): a third party too slow to answer.
        self.policy_gate: threading.Event | None = None
        for client in clients:
            self.add_client(client)

    @property
    def lock(self) -> threading.RLock:
        """The lock guarding all state; re-entrant, held by the server per exchange."""
        return self._lock

    # -- set-up and inspection ------------------------------------------------------

    def add_client(self, client: SandboxClient) -> None:
        """Register ``client``, replacing any client with the same id."""
        with self._lock:
            self._clients[client.client_id] = client

    def is_active(self, token: str) -> bool:
        """Whether ``token`` is a currently usable access token or refresh token."""
        with self._lock:
            issued = self._by_access.get(token)
            if issued is not None:
                return issued.access_active()
            issued = self._by_refresh.get(token)
            return issued is not None and issued.refresh_active()

    # -- fault injection ------------------------------------------------------------

    def fail_token_endpoint(self, status: int, count: int = 1, body: dict | None = None) -> None:
        """Answer the next ``count`` token requests with ``status`` and ``body``."""
        self._queue_fault("token", Fault(status, body or {"error": "server_error"}), count)

    def fail_api(
        self,
        status: int,
        count: int = 1,
        headers: dict[str, str] | None = None,
        body: dict | None = None,
    ) -> None:
        """Answer the next ``count`` API requests with this, before any authentication."""
        fault = Fault(status, body or _default_fault_body(status), dict(headers or {}))
        self._queue_fault("api", fault, count)

    def fail_revocation(self, status: int, count: int = 1) -> None:
        """Answer the next ``count`` revocation requests with ``status``; nothing is revoked."""
        self._queue_fault("revocation", Fault(status, _default_fault_body(status)), count)

    def set_policy(self, page: PolicyPage, body: str, *, title: str | None = None) -> int:
        """Serve a new version of a policy page (``body`` is HTML); returns its version."""
        with self._lock:
            self.policy_pages[page] = (title or self.policy_pages[page][0], body)
            self.policy_versions[page] += 1
            return self.policy_versions[page]

    def fail_policy(
        self,
        page: PolicyPage,
        status: int,
        count: int = 1,
        headers: dict[str, str] | None = None,
    ) -> None:
        """Answer the next ``count`` requests for a policy page with ``status`` (and
        ``headers``: a ``Location`` makes it a redirect)."""
        fault = Fault(status, _default_fault_body(status), dict(headers or {}))
        self._queue_fault(page, fault, count)

    def expire_access_tokens(self) -> None:
        """Make every access token issued so far expired; refresh tokens stay usable."""
        with self._lock:
            for issued in self._by_access.values():
                issued.access_expired = True

    def _queue_fault(self, site: FaultSite, fault: Fault, count: int) -> None:
        if count < 1:
            raise ValueError("count must be at least 1")
        with self._lock:
            self._faults[site].extend([fault] * count)

    def take_fault(self, site: FaultSite) -> Fault | None:
        """The next injected failure for ``site``, consumed; ``None`` if there is none."""
        with self._lock:
            queue = self._faults[site]
            return queue.popleft() if queue else None

    # -- storage for the authorization server ---------------------------------------

    def find_client(self, client_id: str) -> SandboxClient | None:
        with self._lock:
            return self._clients.get(client_id)

    def record_token_request(self, grant_type: str) -> None:
        with self._lock:
            self.token_requests.append(grant_type)

    def store_code(self, code: AuthorizationCode) -> None:
        with self._lock:
            self._codes[code.code] = code

    def find_code(self, code: str, client_id: str) -> AuthorizationCode | None:
        """The live code issued to ``client_id``.

        Replaying a consumed code revokes every token issued from it (RFC 6749 §4.1.2).
        """
        with self._lock:
            if code in self._used_codes:
                self.revoke_grant(self._used_codes[code])
                return None
            found = self._codes.get(code)
            if found is None or found.client_id != client_id or found.is_expired():
                return None
            return found

    def consume_code(self, code: AuthorizationCode) -> None:
        with self._lock:
            self._codes.pop(code.code, None)
            self._used_codes[code.code] = code.grant_id

    def store_token(self, issued: IssuedToken) -> None:
        with self._lock:
            self._by_access[issued.access_token] = issued
            if issued.refresh_token is not None:
                self._by_refresh[issued.refresh_token] = issued

    def find_access_token(self, token: str) -> IssuedToken | None:
        """The record of access token ``token``, whatever its state."""
        with self._lock:
            return self._by_access.get(token)

    def find_active_refresh_token(self, token: str) -> IssuedToken | None:
        with self._lock:
            issued = self._by_refresh.get(token)
            return issued if issued is not None and issued.refresh_active() else None

    def retire_refresh_token(self, issued: IssuedToken) -> None:
        """Invalidate a refresh token that a rotation replaced."""
        with self._lock:
            issued.refresh_revoked = True

    def revoke_access_token(self, issued: IssuedToken) -> None:
        with self._lock:
            issued.access_revoked = True
            self.revoked.append("access_token")

    def revoke_refresh_token(self, issued: IssuedToken) -> None:
        """Revoke a refresh token and every token of the same authorization (RFC 7009 §2.1)."""
        with self._lock:
            self.revoke_grant(issued.grant_id)
            self.revoked.append("refresh_token")

    def revoke_grant(self, grant_id: str) -> None:
        with self._lock:
            for issued in self._by_access.values():
                if issued.grant_id == grant_id:
                    issued.access_revoked = True
                    issued.refresh_revoked = True

    def record_received(self, request: ReceivedRequest) -> None:
        with self._lock:
            self.received.append(request)
