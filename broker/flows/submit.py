"""Submitting a transfer and waiting for its outcome: the caller's side of the engine.

:func:`submit_transfer` accepts a request (:func:`broker.flows.share.accept_transfer`:
decide and record) and, unless the caller asked to be answered at once, waits up to
``BROKER_TRANSFER_WAIT`` for the outcome (:func:`wait_for_outcome`), woken by this
process's workers or, for a transfer another process delivers, by its nudge
(:mod:`broker.store.wakeups`). :func:`raise_for_outcome` turns a final outcome into
the API's answer; :func:`create_transfer` is the synchronous call the demo and the
connector test kit use.
"""

from __future__ import annotations

import threading
import time

from sqlalchemy.exc import DBAPIError
from sqlmodel import Session

from broker.core.errors import DeliveryFailed, NotFound, OutcomeNotRecorded, OutcomeUnknown
from broker.core.gateway import TransferRequest
from broker.core.statuses import TransferStatus
from broker.flows.share import accept_transfer, transfer_dict
from broker.flows.workers import ensure_workers
from broker.runtime import Runtime
from broker.store.models import Transfer
from broker.store.transfer_rows import get_transfer

__all__ = ["create_transfer", "raise_for_outcome", "submit_transfer", "wait_for_outcome"]


def _unrecorded(transfer_id: str, outcome: str | None) -> OutcomeNotRecorded:
    details: dict[str, str] = {"transfer_id": transfer_id}
    if outcome is not None:
        details["outcome"] = outcome
    return OutcomeNotRecorded(
        "the broker could not record this transfer's outcome (its database failed); "
        "the transfer stays pending and is resolved automatically: ask for it later",
        details=details,
    )


def wait_for_outcome(
    rt: Runtime,
    transfer_id: str,
    *,
    timeout: float,
    current: Transfer | None = None,
    event: threading.Event | None = None,
) -> Transfer:
    """The transfer once it is final, rescheduled beyond ``timeout``, or ``timeout``
    has passed (then still pending). Woken by this process's workers, which hand the
    stored transfer over; a transfer run by another process is polled.
    ``current``/``event``: the transfer as the caller knows it and the event it
    registered before handing it to a worker. ``OutcomeNotRecorded`` when the
    database fails."""
    deadline = time.monotonic() + timeout
    poll = 0.05
    t = current
    while True:
        event = event or rt.outcome_event(transfer_id)
        if t is None:
            try:
                with Session(rt.engine) as session:
                    t = get_transfer(session, transfer_id=transfer_id)
            except DBAPIError:
                raise _unrecorded(transfer_id, rt.forget_outcome(transfer_id)[1]) from None
            if t is None:  # erased while we waited (the user's data was deleted)
                rt.forget_outcome(transfer_id)
                raise NotFound(f"no transfer {transfer_id!r}", details={"transfer_id": transfer_id})
        left = deadline - time.monotonic()
        if t.status != TransferStatus.PENDING or left <= 0:
            rt.forget_outcome(transfer_id)
            return t
        if t.lease_owner is None and t.next_attempt_at is not None:
            due_in = (t.next_attempt_at - rt.clock()).total_seconds()
            if due_in > left:  # rescheduled past our wait: answer now
                rt.forget_outcome(transfer_id)
                return t
        woke = event.wait(min(left, poll))
        poll = min(poll * 2, 0.5)
        event = None
        if woke:
            pushed, lost = rt.forget_outcome(transfer_id)
            if lost is not None:
                raise _unrecorded(transfer_id, lost)
            t = pushed  # None: read it again
        else:
            t = None


def submit_transfer(
    rt: Runtime,
    *,
    connection_id: str,
    request: TransferRequest,
    actor: str | None,
    wait: float,
) -> tuple[Transfer, bool]:
    """Accept a transfer and, with ``wait`` > 0, wait that long for its outcome.

    A waited-for transfer is leased to this process as it is accepted and handed
    straight to a worker thread; otherwise it is queued for any worker."""
    workers = ensure_workers(rt)
    # Leased to this process as it is accepted (no claim transaction, no second read)
    # when the caller waits for it, or when a thread here is idle (it starts at once).
    inline = workers is not None and (wait > 0 or workers.has_room())
    transfer, new = accept_transfer(
        rt,
        connection_id=connection_id,
        request=request,
        actor=actor,
        lease_owner=workers.owner if inline and workers is not None else None,
    )
    event = rt.outcome_event(transfer.id) if wait > 0 else None
    nudges = rt.wakeups()  # (and hears outcomes written by other processes)
    if new and workers is not None and inline and transfer.lease_owner == workers.owner:
        workers.hand_off(transfer)
    elif new and transfer.status == TransferStatus.PENDING:
        if workers is not None:
            workers.wake()
        nudges.work()  # a worker of another process may be idle
    if wait > 0 and transfer.status == TransferStatus.PENDING:
        known = transfer if new else None  # a replay's row may have moved on since
        transfer = wait_for_outcome(rt, transfer.id, timeout=wait, current=known, event=event)
    elif event is not None:
        rt.forget_outcome(transfer.id)
    return transfer, new


def raise_for_outcome(transfer: Transfer, body: dict[str, object]) -> None:
    """A failed, cancelled or unknown outcome is the error it is, carrying ``body``
    (the transfer as the API shows it)."""
    if transfer.status in (
        TransferStatus.PENDING,
        TransferStatus.DELIVERED,
        TransferStatus.BLOCKED,
    ):
        return
    name = transfer.connector_id
    what = {
        "failed": f"{name} did not accept the transfer: {transfer.reason}",
        "outcome_unknown": f"{name} may or may not have received the transfer: {transfer.reason}",
        "cancelled": f"the transfer was cancelled: {transfer.reason}",
    }.get(transfer.status, f"the transfer ended {transfer.status}")
    error = OutcomeUnknown if transfer.status == TransferStatus.OUTCOME_UNKNOWN else DeliveryFailed
    raise error(what, details={"transfer_id": transfer.id, "transfer": body})


def create_transfer(
    rt: Runtime, *, connection_id: str, request: TransferRequest, actor: str | None
) -> tuple[Transfer, bool]:
    """Accept a transfer and wait for its outcome (``BROKER_TRANSFER_WAIT``), as the
    API's default does; raises the refusal, or the failure after recording it."""
    transfer, new = submit_transfer(
        rt,
        connection_id=connection_id,
        request=request,
        actor=actor,
        wait=rt.settings.transfer_wait,
    )
    if new:
        raise_for_outcome(transfer, transfer_dict(transfer))
    return transfer, new
