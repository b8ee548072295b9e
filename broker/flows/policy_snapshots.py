"""Snapshots of a third party's privacy policy and terms pages.

:func:`fetch_page` fetches one page under the egress rules: the URL must pass the
manifest URL rules (https; plain http only for a loopback host), the socket goes
through the runtime's transport (:class:`~broker.core.addresses.PinnedTransport`:
public addresses only, unless the host itself is loopback), redirects are followed
(at most five) only to the same host and port (or from http to https on the same
host), no cookie is sent or kept (the transport is used directly, without a client
and its cookie jar), the answer must be HTML or plain text, and the whole fetch is
bounded by ``BROKER_POLICY_FETCH_TIMEOUT`` seconds and ``BROKER_POLICY_MAX_BYTES``
bytes (decoded). A page seen before is asked for with ``If-None-Match`` /
``If-Modified-Since``; a ``304`` keeps its snapshot.

:func:`check_pages` fetches a connector's pages (both at once) and records each fetch
in ``policy_checks``; a retrieved page's normalised text is stored once per distinct
SHA-256 in ``policy_snapshots``. A fetch that fails is recorded ``not retrieved``
with the reason, never with a digest. :func:`shown_digests` is what a consent record
keeps: ``sha256:<hex>`` per page, or ``not retrieved``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from urllib.parse import urljoin, urlsplit

import httpx
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session

from broker.core.addresses import PinnedTransport
from broker.core.connector import Connector
from broker.core.errors import BrokerError, InvariantBroken
from broker.core.policy_text import digest, normalise
from broker.core.terms import PAGES
from broker.core.urls import url_problem
from broker.runtime import Runtime
from broker.store.db import session_scope
from broker.store.policy_models import NOT_RETRIEVED, PolicyCheck, PolicySnapshot
from broker.store.policy_snapshots import latest_check

__all__ = [
    "PageFetch",
    "check_pages",
    "fetch_page",
    "latest_checks",
    "page_url",
    "retrieved_digests",
    "shown_digests",
    "snapshot",
    "snapshot_text",
]

log = logging.getLogger("broker.policies")

_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_MAX_REDIRECTS = 5
_TEXT_TYPES = frozenset({"text/html", "application/xhtml+xml", "text/plain"})
_DEFAULT_PORTS = {"https": 443, "http": 80}


@dataclass(frozen=True)
class PageFetch:
    """The outcome of one fetch: ``retrieved`` (``text``, ``digest``), ``unchanged``
    (a 304 for the ``etag``/``last_modified`` asked with) or ``not retrieved``."""

    url: str
    outcome: str
    http_status: int | None = None
    text: str | None = None
    digest: str | None = None
    etag: str | None = None
    last_modified: str | None = None
    content_type: str | None = None
    error: str | None = None


def page_url(connector: Connector, page: str) -> str:
    manifest = connector.manifest
    return manifest.privacy_policy_url if page == "privacy_policy" else manifest.terms_url


def _host_port(url: str) -> tuple[str, str, int]:
    parts = urlsplit(url)
    return parts.scheme, (parts.hostname or "").lower(), parts.port or _DEFAULT_PORTS[parts.scheme]


def _redirect_problem(origin: str, target: str) -> str | None:
    if problem := url_problem(target):
        return f"redirected to a URL the broker does not fetch: {problem}"
    scheme, host, port = _host_port(origin)
    t_scheme, t_host, t_port = _host_port(target)
    if t_host != host:
        return f"redirected to another host ({t_host}); only {host} is declared"
    upgrade = scheme == "http" and t_scheme == "https" and t_port == 443
    if t_port != port and not upgrade:
        return f"redirected to another port ({t_port}) of {host}"
    return None


def _failed(url: str, error: str, status: int | None = None) -> PageFetch:
    return PageFetch(url=url, outcome=NOT_RETRIEVED, http_status=status, error=error)


def _read(resp: httpx.Response, url: str, *, max_bytes: int, deadline: float) -> PageFetch:
    content_type = resp.headers.get("content-type", "")
    kind = content_type.split(";", 1)[0].strip().lower()
    if kind not in _TEXT_TYPES:
        return _failed(url, f"not an HTML or text page ({kind or 'no content type'})", 200)
    declared = resp.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > max_bytes:
        return _failed(url, f"the page is larger than {max_bytes} bytes", 200)
    body = bytearray()
    for chunk in resp.iter_bytes():
        body += chunk
        if len(body) > max_bytes:
            return _failed(url, f"the page is larger than {max_bytes} bytes", 200)
        if time.monotonic() > deadline:
            return _failed(url, "timed out while reading the page", 200)
    text = normalise(body.decode(resp.charset_encoding or "utf-8", errors="replace"), kind)
    return PageFetch(
        url=url,
        outcome="retrieved",
        http_status=200,
        text=text,
        digest=digest(text),
        etag=(resp.headers.get("etag") or "")[:200] or None,
        last_modified=(resp.headers.get("last-modified") or "")[:100] or None,
        content_type=kind,
    )


def fetch_page(
    transport: httpx.BaseTransport,
    url: str,
    *,
    timeout: float,
    max_bytes: int,
    user_agent: str = "scoped-broker",
    etag: str | None = None,
    last_modified: str | None = None,
) -> PageFetch:
    """Fetch ``url`` under the egress rules (see the module docstring)."""
    if problem := url_problem(url):
        return _failed(url, problem)
    deadline = time.monotonic() + timeout
    current = url
    for hop in range(_MAX_REDIRECTS + 1):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return _failed(url, f"timed out after {timeout:g}s")
        headers = {"User-Agent": user_agent, "Accept": "text/html, text/plain;q=0.9"}
        if hop == 0 and etag:
            headers["If-None-Match"] = etag
        if hop == 0 and last_modified:
            headers["If-Modified-Since"] = last_modified
        request = httpx.Request(
            "GET",
            current,
            headers=headers,
            extensions={"timeout": httpx.Timeout(remaining).as_dict()},
        )
        try:
            resp = transport.handle_request(request)
            try:
                status = resp.status_code
                if status in _REDIRECTS:
                    target = urljoin(current, resp.headers.get("location", ""))
                    if problem := _redirect_problem(url, target):
                        return _failed(url, problem, status)
                    current = target
                    continue
                if status == 304 and (etag or last_modified):
                    return PageFetch(url=url, outcome="unchanged", http_status=304)
                if status != 200:
                    return _failed(url, f"the server answered {status}", status)
                return _read(resp, url, max_bytes=max_bytes, deadline=deadline)
            finally:
                resp.close()
        except BrokerError as exc:  # the address check (broker.core.addresses)
            return _failed(url, f"refused: {exc.message}")
        except httpx.TimeoutException:
            return _failed(url, f"timed out after {timeout:g}s")
        except httpx.HTTPError as exc:
            return _failed(url, f"could not fetch the page ({type(exc).__name__})")
    return _failed(url, f"more than {_MAX_REDIRECTS} redirects")


def latest_checks(session: Session, connector: Connector) -> dict[str, PolicyCheck | None]:
    """The last check of each of the connector's (current) page URLs, if any."""
    return {
        page: latest_check(
            session,
            connector_id=connector.id,
            page=page,
            url=page_url(connector, page),
            retrieved=False,
        )
        for page in PAGES
    }


def retrieved_digests(session: Session, connector: Connector) -> dict[str, str | None]:
    """The digest of each page's last retrieved snapshot (``None``: never retrieved)."""
    out: dict[str, str | None] = {}
    for page in PAGES:
        row = latest_check(
            session,
            connector_id=connector.id,
            page=page,
            url=page_url(connector, page),
            retrieved=True,
        )
        out[page] = row.digest if row is not None else None
    return out


def shown_digests(checks: Mapping[str, PolicyCheck | None]) -> dict[str, str]:
    """What a consent record keeps: ``sha256:<hex>`` per page, or ``not retrieved``."""
    return {
        page: f"sha256:{row.digest}" if row is not None and row.digest else NOT_RETRIEVED
        for page, row in checks.items()
    }


def snapshot_text(session: Session, digest_hex: str | None) -> str | None:
    if digest_hex is None:
        return None
    row = session.get(PolicySnapshot, digest_hex)
    return row.text if row is not None else None


def snapshot(rt: Runtime, digest_hex: str) -> str | None:
    """The normalised text of the page snapshot ``digest_hex``, if the broker has it."""
    with Session(rt.engine) as session:
        return snapshot_text(session, digest_hex)


def _store_snapshot(rt: Runtime, fetch: PageFetch, at: datetime) -> None:
    if fetch.digest is None or fetch.text is None:
        raise InvariantBroken("only a page that was read can be kept as a snapshot")
    with Session(rt.engine) as session:
        if session.get(PolicySnapshot, fetch.digest) is not None:
            return
        session.add(
            PolicySnapshot(
                digest=fetch.digest,
                url=fetch.url,
                fetched_at=at,
                http_status=fetch.http_status or 200,
                etag=fetch.etag,
                last_modified=fetch.last_modified,
                content_type=fetch.content_type,
                text=fetch.text,
            )
        )
        try:
            session.commit()
        except IntegrityError:  # stored at the same moment by another process
            session.rollback()


def _fetch_and_record(rt: Runtime, connector: Connector, page: str) -> PolicyCheck:
    url = page_url(connector, page)
    with Session(rt.engine) as session:
        known = latest_check(session, connector_id=connector.id, page=page, url=url, retrieved=True)
    if rt.transport is None:  # a runtime built by hand: the guarded transport all the same
        rt.transport = PinnedTransport(trust_env=rt.settings.http_trust_env)
    transport = rt.transport
    fetch = fetch_page(
        transport,
        url,
        timeout=rt.settings.policy_fetch_timeout,
        max_bytes=rt.settings.policy_max_bytes,
        user_agent=f"scoped-broker (+{rt.settings.resolved_base_url})",
        etag=known.etag if known is not None else None,
        last_modified=known.last_modified if known is not None else None,
    )
    if fetch.outcome == "unchanged" and known is not None:
        fetch = replace(
            fetch, outcome="retrieved", digest=known.digest, etag=known.etag,
            last_modified=known.last_modified,
        )  # fmt: skip
    now = rt.clock()
    if fetch.outcome == "retrieved" and fetch.text is not None:
        _store_snapshot(rt, fetch, now)
    if fetch.outcome == NOT_RETRIEVED:
        log.warning("%s %s not retrieved: %s", connector.id, page, fetch.error)
    row = PolicyCheck(
        connector_id=connector.id,
        page=page,
        url=url,
        checked_at=now,
        outcome="retrieved" if fetch.digest else NOT_RETRIEVED,
        http_status=fetch.http_status,
        digest=fetch.digest,
        etag=fetch.etag,
        last_modified=fetch.last_modified,
        error=fetch.error,
    )
    with session_scope(rt.engine) as session:
        session.add(row)
        session.flush()
        session.expunge(row)
    return row


def check_pages(
    rt: Runtime, connector: Connector, pages: tuple[str, ...] = PAGES
) -> dict[str, PolicyCheck]:
    """Fetch and record the connector's pages, at the same time; returns each check."""
    out: dict[str, PolicyCheck] = {}
    errors: list[BaseException] = []

    def run(page: str) -> None:
        try:
            out[page] = _fetch_and_record(rt, connector, page)
        except BaseException as exc:  # handed to the caller's thread below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(p,), daemon=True) for p in pages[1:]]
    for thread in threads:
        thread.start()
    if pages:
        run(pages[0])
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    return out
