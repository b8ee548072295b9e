"""How often the auditor console's sign-in may be tried: per client address and per key.

Counting is the ``limits`` library's fixed-window strategy. Its storage is memory
by default (one broker process; counters are lost on restart) or, with
``BROKER_RATE_LIMIT_STORAGE=database``, the broker's own database
(:class:`broker.store.rate_limits.DatabaseStorage`), shared by every process on it.

Every attempt counts against its client address, before the key is looked at; an
attempt whose key is known (valid, revoked or of another role) also counts against
that key's id. A refused attempt raises :class:`RateLimited` with the seconds until
the window that refused it ends (``Retry-After``).
"""

from __future__ import annotations

import time
from collections.abc import Callable

from limits import RateLimitItem, parse_many
from limits.storage import MemoryStorage, Storage
from limits.strategies import FixedWindowRateLimiter

from broker.core.errors import ConfigurationError, RateLimited
from broker.runtime import Runtime
from broker.store.rate_limits import DatabaseStorage

__all__ = ["LoginThrottle"]


def _items(text: str, setting: str) -> list[RateLimitItem]:
    try:
        items = parse_many(text)
    except ValueError:
        items = []
    if not items:
        raise ConfigurationError(f"{setting} must be limits like '10/minute;50/hour', not {text!r}")
    return items


class LoginThrottle:
    """The console sign-in limits of one broker process."""

    def __init__(
        self,
        storage: Storage,
        *,
        per_address: str,
        per_key: str,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.storage = storage
        self._limiter = FixedWindowRateLimiter(storage)
        self._per_address = _items(per_address, "BROKER_CONSOLE_LOGIN_LIMIT_PER_ADDRESS")
        self._per_key = _items(per_key, "BROKER_CONSOLE_LOGIN_LIMIT_PER_KEY")
        self._clock = clock

    @classmethod
    def for_runtime(cls, rt: Runtime) -> LoginThrottle:
        s = rt.settings
        if s.rate_limit_storage == "database":
            clock: Callable[[], float] = lambda: rt.clock().timestamp()  # noqa: E731
            storage: Storage = DatabaseStorage(rt.engine, clock=clock)
        else:
            clock, storage = time.time, MemoryStorage()
        return cls(
            storage,
            per_address=s.console_login_limit_per_address,
            per_key=s.console_login_limit_per_key,
            clock=clock,
        )

    def _hit(self, items: list[RateLimitItem], *identifiers: str) -> None:
        refused = [item for item in items if not self._limiter.hit(item, *identifiers)]
        if refused:
            now = self._clock()
            wait = max(
                self._limiter.get_window_stats(item, *identifiers).reset_time - now
                for item in refused
            )
            raise RateLimited(
                "too many sign-in attempts; wait before trying again", retry_after=wait
            )

    def attempt_from(self, address: str | None) -> None:
        """Count one sign-in attempt from ``address``; raises :class:`RateLimited`."""
        self._hit(self._per_address, "console-login", "address", address or "unknown")

    def attempt_with(self, key_id: str) -> None:
        """Count one sign-in attempt with the key ``key_id``; raises :class:`RateLimited`."""
        self._hit(self._per_key, "console-login", "key", key_id)
