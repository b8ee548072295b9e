"""Verifying the whole audit log: fast, in ranges (optionally in worker processes).

``verify_log`` returns exactly what one ``verify_chain`` pass over every stored entry,
checked against the head file and the signed checkpoints, returns; it gets there fast:

1. the log is cut into seq ranges of ``BLOCK`` entries; each is read with a streaming
   Core query and checked by ``scan_range`` (one encoding per entry, its hash and its
   Merkle leaf from the same bytes), in ``workers`` processes when there are enough
   ranges; ranges are joined in order (``Prefix``), seams checked;
2. the accepted prefix stops at the first row ``verify_chain`` would not accept, or at
   the entry of the recorded head if it has another hash there;
3. ``verify_chain`` (``start=`` the state after the prefix) then reads the rest as
   before, so every problem is located and classified by the same rules and words.
"""

from __future__ import annotations

import multiprocessing
import os
import threading
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from contextlib import closing
from dataclasses import dataclass

from sqlalchemy import Engine

from broker.core.audit_chain import (
    GENESIS_HASH,
    AuditEntry,
    ChainHead,
    VerifyResult,
    read_head,
    verify_chain,
)
from broker.core.chain_scan import BLOCK, Prefix, RangeScan, ranges, scan_range
from broker.core.checkpoint import Checkpoint, open_note, split_notes
from broker.core.errors import InvalidInput
from broker.core.merkle import Frontier, leaf_hash
from broker.core.tamper import TamperKind
from broker.runtime import Runtime
from broker.store.audit import flush_head_files, iter_entries
from broker.store.audit_scan import chain_state, hash_at, iter_rows, last_seq

__all__ = ["Position", "Progress", "check_log", "signed_roots", "verify_log"]

Progress = Callable[[int, int], None]
"""``progress(done, total)``: entries verified so far, entries in the log (an estimate)."""

PARALLEL_FROM = 4
"""Ranges a log must span before ``workers=None`` uses one process per CPU."""

_ENGINES: dict[str, Engine] = {}


def _scan_worker(url: str, start: int, end: int, sizes: tuple[int, ...]) -> RangeScan:
    """In a worker process: read and scan one range through this process's own engine."""
    engine = _ENGINES.get(url)
    if engine is None:
        from broker.store.db import create_db_engine

        engine = _ENGINES[url] = create_db_engine(url)
    with closing(iter_rows(engine, start, end)) as rows:
        return scan_range(rows, start=start, end=end, sizes=sizes)


def _in_memory(url: str) -> bool:
    return ":memory:" in url or "mode=memory" in url or url.rstrip("/").endswith("sqlite:")


def _pool(workers: int) -> ProcessPoolExecutor:
    # A process with one thread (the CLI) forks its workers: they start at once. One
    # running threads (a web server, the head writer) must not fork (a lock another
    # thread held stays held in the child): forkserver forks them from a clean server.
    ctx: multiprocessing.context.BaseContext
    if threading.active_count() == 1:
        ctx = multiprocessing.get_context("fork")
    else:
        ctx = multiprocessing.get_context("forkserver")
        ctx.set_forkserver_preload(["broker.flows.verification"])
    return ProcessPoolExecutor(workers, mp_context=ctx)


def _scans(
    rt: Runtime, spans: Iterator[tuple[int, int]], sizes: tuple[int, ...], workers: int
) -> Iterator[RangeScan]:
    """The scans of ``spans`` in order; with ``workers`` > 1, at most two per worker
    ahead of the one the caller is at (it stops at the first range that does not join)."""
    url = rt.settings.resolved_database_url
    if workers <= 1 or _in_memory(url):
        for a, b in spans:
            with closing(iter_rows(rt.engine, a, b)) as rows:
                scan = scan_range(rows, start=a, end=b, sizes=sizes)
            yield scan
        return
    pool = _pool(workers)
    pending: deque[Future[RangeScan]] = deque()
    try:
        for a, b in spans:
            pending.append(pool.submit(_scan_worker, url, a, b, sizes))
            if len(pending) >= 2 * workers:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _prefix(
    rt: Runtime,
    roots: dict[int, bytes],
    head: ChainHead | None,
    workers: int | None,
    progress: Progress | None,
    block: int,
) -> tuple[Prefix, int]:
    """The accepted prefix of the stored log, and the largest seq stored."""
    top = last_seq(rt.engine)
    spans = ranges(1, top, block)
    if workers is None:
        workers = (os.cpu_count() or 1) if -(-top // block) >= PARALLEL_FROM else 1
    if -(-top // block) < 2:
        workers = 1  # one range: no process to start
    prefix = Prefix()
    sizes = tuple(sorted(roots))
    scans = _scans(rt, spans, sizes, workers)
    try:
        for scan in scans:
            prefix.join(scan, roots)
            if progress:
                progress(prefix.size, top)
            if prefix.stopped:
                break
    finally:
        close = getattr(scans, "close", None)
        if close:
            close()
    at = head.seq if head is not None and 1 <= head.seq <= prefix.size else 0
    if head is not None and at and hash_at(rt.engine, at) != head.hash:
        prefix = Prefix(size=at - 1, stopped=True)  # verify_chain sees the head entry
    return prefix, top


@dataclass(frozen=True)
class Position:
    """A verified point of the log: entries ``1 .. seq`` verified, the hash of entry
    ``seq`` and the tree's edge over them (``Frontier.hashes``)."""

    seq: int
    hash: str
    edge: tuple[bytes, ...]
    checkpoint: int | None = None  # the largest signed checkpoint size at most ``seq``


def _prefix_since(
    rt: Runtime, since: Position, roots: dict[int, bytes], top: int
) -> Prefix | VerifyResult:
    """The accepted prefix after ``since`` (one scan, this process), or the result when
    what ``since`` vouched for is no longer there as it was."""
    s = since.seq
    if s > top:
        msg = f"the log ends at entry {top} but entry {s} was verified before: cut off since"
        return VerifyResult(False, top, None, top + 1, TamperKind.TRUNCATED, msg)
    if s and hash_at(rt.engine, s) != since.hash:
        msg = (
            f"entry {s}, verified before, no longer has the hash it had then: the log was "
            f"rewritten at or before entry {s} (a full verification locates the change)"
        )
        return VerifyResult(False, s, None, s, TamperKind.FORKED, msg)
    edge = list(since.edge)
    with closing(iter_rows(rt.engine, s + 1, top)) as rows:
        scan = scan_range(rows, start=s + 1, end=top, sizes=roots, edge=edge)
    prefix = Prefix(s, since.hash, Frontier(s, edge))
    if scan.accepted and scan.first_prev == since.hash:
        prefix = Prefix(s + scan.accepted, scan.last_hash or since.hash)
        prefix.tree = Frontier(prefix.size, scan.edge)
        bad = [n for n, e in sorted(scan.edges_at.items()) if Frontier(n, e).root() != roots[n]]
        prefix.differs = bad[0] if bad else None
    return prefix


def check_log(
    rt: Runtime,
    *,
    since: Position | None = None,
    progress: Progress | None = None,
    workers: int | None = None,
    block: int = BLOCK,
    ranged: bool = True,
) -> tuple[VerifyResult, Position | None]:
    """``verify_log``, and the position verified (None unless the result is ok).
    ``since``: verify only the entries after that position (incremental: what it
    vouched for is trusted, except that entry ``since.seq`` must still have its hash)."""
    if block < 1 or block & (block - 1):
        raise InvalidInput("block must be a power of two", details={"field": "block"})
    flush_head_files()
    try:
        head = read_head(rt.settings.audit_head_file)
    except InvalidInput as exc:
        return VerifyResult(
            ok=False, checked=0, head=None, first_bad_seq=None, problem=TamperKind.FORKED,
            message=f"the head file is damaged: {exc.message}",
        ), None  # fmt: skip
    try:
        roots = signed_roots(rt, above=since.seq if since else 0)
    except InvalidInput as exc:
        return VerifyResult(
            ok=False, checked=0, head=None, first_bad_seq=None, problem=TamperKind.FORKED,
            message=f"the checkpoints file: {exc.message}",
        ), None  # fmt: skip
    top = last_seq(rt.engine)
    if since is not None:
        found = _prefix_since(rt, since, roots, top)
        if isinstance(found, VerifyResult):
            return found, None
        prefix = found
        if head is not None and 1 <= head.seq <= prefix.size:
            if hash_at(rt.engine, head.seq) != head.hash and head.seq <= since.seq:
                msg = (
                    f"entry {head.seq} does not match the recorded head: the log was "
                    f"rewritten at or before entry {head.seq}"
                )
                return VerifyResult(False, since.seq, None, head.seq, TamperKind.FORKED, msg), None
            if hash_at(rt.engine, head.seq) != head.hash:
                prefix = Prefix(size=head.seq - 1, stopped=True)
    elif ranged:
        prefix, top = _prefix(rt, roots, head, workers, progress, block)
    else:
        prefix = Prefix()
    tree = prefix.tree if prefix.size == prefix.tree.size else None
    differs = [prefix.differs] if prefix.differs is not None else []
    unreadable: list[InvalidInput] = []

    def entries() -> Iterator[AuditEntry]:
        done = prefix.size
        try:
            for entry in iter_entries(rt.engine, after=prefix.size):
                if tree is not None:
                    tree.append(leaf_hash(entry.canonical()))
                    if tree.size in roots and not differs and tree.root() != roots[tree.size]:
                        differs.append(tree.size)
                done += 1
                if progress and done % 4096 == 0:
                    progress(done, max(top, done))
                yield entry
        except InvalidInput as exc:
            unreadable.append(exc)

    start = chain_state(rt.engine, prefix.size)
    result = verify_chain(entries(), expected_head=head, start=start)
    if progress:
        progress(result.checked, max(top, result.checked))
    result = _against_checkpoints(result, unreadable, differs, roots)
    if not result.ok or tree is None:
        return result, None
    seq = result.head.seq if result.head else 0
    if tree.size != seq:
        return result, None
    covered = max((n for n in roots if n <= seq), default=since.checkpoint if since else None)
    last_hash = result.head.hash if result.head else GENESIS_HASH
    return result, Position(seq, last_hash, tuple(tree.hashes), covered)


def verify_log(
    rt: Runtime,
    *,
    progress: Progress | None = None,
    workers: int | None = None,
    block: int = BLOCK,
    ranged: bool = True,
) -> VerifyResult:
    """Verify the whole chain against the head and the signed checkpoints kept outside
    the database (``audit.head``, ``checkpoints``): a Merkle root that differs from a
    checkpoint's shows a change hidden by a recomputed chain; a log shorter than a
    checkpoint was truncated.

    A row that cannot even be read as an entry (a column set to something
    no entry can hold) counts as modified at that seq.

    ``workers``: processes checking ranges (None: one per CPU for a large log, else
    this process); ``block``: entries per range (a power of two); ``ranged=False``: one
    ``verify_chain`` pass over every entry (slow: the reference the ranged check equals).
    ``progress(done, total)`` is called as ranges complete."""
    options = {"progress": progress, "workers": workers, "block": block, "ranged": ranged}
    return check_log(rt, **options)[0]  # type: ignore[arg-type]


def _against_checkpoints(
    result: VerifyResult,
    unreadable: list[InvalidInput],
    differs: list[int],
    roots: dict[int, bytes],
) -> VerifyResult:
    if unreadable and (result.ok or result.problem == TamperKind.TRUNCATED):
        exc = unreadable[0]
        seq = exc.details.get("seq")
        return VerifyResult(
            ok=False, checked=result.checked, head=result.head, first_bad_seq=seq,
            problem=TamperKind.MODIFIED, message=f"entry {seq} cannot be read: {exc.message}",
        )  # fmt: skip
    if result.ok and differs:
        first = max((s for s in roots if s < differs[0]), default=0) + 1
        return VerifyResult(
            ok=False, checked=result.checked, head=None, first_bad_seq=first,
            problem=TamperKind.MODIFIED,
            message=f"entries {first} to {differs[0]} differ from the signed checkpoint of size "
            f"{differs[0]}: changed after it was signed, and the chain recomputed",
        )  # fmt: skip
    if result.ok and roots and result.checked < max(roots):
        return VerifyResult(
            ok=False, checked=result.checked, head=result.head, first_bad_seq=result.checked + 1,
            problem=TamperKind.TRUNCATED,
            message=f"the log ends at entry {result.checked} but a checkpoint of size "
            f"{max(roots)} was signed",
        )  # fmt: skip
    return result


def signed_roots(rt: Runtime, *, above: int = 0) -> dict[int, bytes]:
    """``{size: root}`` of the checkpoints in ``BROKER_HOME/checkpoints`` (outside the
    database), each verified with the signing keys; two roots for a size are a fork.
    ``above``: only those of larger sizes (the others are neither verified nor kept)."""
    path = rt.settings.checkpoints_file
    if not path.exists():
        return {}
    verifiers = rt.signing_keys().verifiers()
    roots: dict[int, bytes] = {}
    for note in split_notes(path.read_text(encoding="utf-8")):
        size = note.split("\n", 2)[1:2]
        if above and size and size[0].isdigit() and int(size[0]) <= above:
            continue
        cp = Checkpoint.parse(open_note(note, verifiers)[0])
        if roots.setdefault(cp.tree_size, cp.root_hash) != cp.root_hash:
            raise InvalidInput(f"two signed checkpoints of size {cp.tree_size} differ (a fork)")
    return roots
