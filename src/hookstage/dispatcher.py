"""Claim, send, record: the loop that empties the outbox.

One dispatcher runs in ``serve`` or in each ``worker`` process. It claims due deliveries
with a lease and sends each through one pool of keep-alive connections under a global and a
per-endpoint concurrency limit. One task talks to the store: each of its turns records the
attempts that finished since the last turn and claims as many new deliveries as there is
room for (none in a quiet spell: the last claim found all there was), in one transaction
(durable without a commit per delivery).

Isolation: each endpoint's deliveries queue for its own workers, which take a global slot
only to send, and an endpoint with a full queue is left out of the next claims, so a
black-holed endpoint holds only its own workers. Each endpoint (URL) has a circuit breaker
(``circuit``): once it opens, the endpoint's deliveries are neither claimed nor attempted
(their retry budget untouched) until a probe after the cool-down succeeds; then what
waited is claimed as usual.

Hand-off: a step in this process may claim its new deliveries in its own write, on room
the dispatcher ``reserve``s, and ``adopt`` them for sending at once: no wake, no turn, no
claim between the commit and the request.

A 410 Gone disables the stage's endpoint (``store.endpoints``) in the transaction that
records it. A ``settle`` hook, when given, runs in every recording transaction with the
attempts it records: the engine moves gate-mode tasks on there.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import secrets
import socket
import ssl
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy.ext.asyncio import AsyncConnection

from hookstage import __version__, circuit
from hookstage.circuit import Circuit, CircuitPolicy
from hookstage.logs import safe_url
from hookstage.metrics import DeliveryMetrics, Family, circuit_families, outcome_of
from hookstage.retry import Decision, RetryPolicy, Verdict, decide
from hookstage.signing import Signer
from hookstage.store import Store, flush
from hookstage.store.deliveries import (
    AttemptResult,
    Claimed,
    Handoff,
    Lease,
    claim_and_next_due,
    claimed_from,
    claiming,
    recording,
)
from hookstage.store.deliveries import record as record_results
from hookstage.store.deliveries import release as release_leases
from hookstage.store.endpoints import disable as disable_endpoints
from hookstage.transport import HttpTransport, OutboundRequest, Outcome, Transport

__all__ = ["Dispatcher", "Endpoint", "Resolve", "Settle", "default_worker_id", "idle_wait"]

log = logging.getLogger(__name__)

_USER_AGENT = f"hookstage/{__version__}"
_TURN_TRIES = 3


@dataclass(frozen=True)
class Endpoint:
    """Where and how one stage's deliveries are sent, as configured at send time.

    ``signer`` holds the secrets (its repr hides them); ``policy`` None means the
    dispatcher's default; ``ssl`` the TLS trust to verify an https receiver with (None: the
    system's CAs). ``settles`` False says no task waits on these deliveries (a pass-mode
    stage): their attempts skip the ``settle`` hook, and its savepoint.
    """

    url: str
    signer: Signer = field(default_factory=Signer)
    timeout: float = 15.0
    policy: RetryPolicy | None = None
    ssl: ssl.SSLContext | None = field(default=None, repr=False, compare=False)
    settles: bool = True

    def __post_init__(self) -> None:
        parts = urlsplit(self.url)
        # The URL is not repeated: it may carry credentials.
        if parts.scheme not in {"http", "https"} or not parts.hostname:
            raise ValueError("url: expected an absolute http:// or https:// URL")
        if not self.timeout > 0:
            raise ValueError(f"timeout: expected seconds > 0, got {self.timeout!r}")


Resolve = Callable[[str, str], Awaitable[Endpoint | None]]
Settle = Callable[[AsyncConnection, Sequence[AttemptResult]], Awaitable[None]]
_Item = AttemptResult | Lease


def default_worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"


class _Slot:
    """One endpoint (URL): its claimed deliveries waiting to be sent, the workers sending
    them (at most ``per_endpoint``), and how many are waiting or in flight (``backlog``)."""

    __slots__ = ("backlog", "queue", "workers")

    def __init__(self) -> None:
        self.queue: deque[_Job] = deque()
        self.workers = 0
        self.backlog = 0


@dataclass(eq=False, slots=True)
class _Job:
    claimed: Claimed
    endpoint: Endpoint
    started_at: float | None = None
    # The worker holding the job (waiting for a global slot, or sending).
    task: asyncio.Task[None] | None = None


class Dispatcher:
    """Delivers the outbox until ``stop()``. ``wake()`` after a commit that enqueued.

    ``concurrency`` bounds requests in flight, ``per_endpoint`` those to one URL; ``batch``
    bounds what one turn claims and what it records. A turn costs about as much wall time
    for 50 deliveries as for 500 (its commit, and waiting for the event loop between its
    statements), so a full batch is what lets a drain go faster than turns can go round;
    under light load turns stay small. ``lease_seconds`` should exceed the longest
    endpoint timeout.
    ``resolve(project_id, stage_id)`` gives a stage's endpoint at send time (None: the
    stage is gone, and its deliveries fail). ``settle(conn, results)`` runs inside each
    transaction that records attempts (in a savepoint: if it fails, the attempts are still
    recorded). ``circuit`` sets when an endpoint's circuit opens and for how long.
    """

    def __init__(
        self,
        store: Store,
        *,
        resolve: Resolve,
        transport: Transport | None = None,
        policy: RetryPolicy | None = None,
        settle: Settle | None = None,
        circuit: CircuitPolicy | None = None,
        worker_id: str | None = None,
        concurrency: int = 256,
        per_endpoint: int = 64,
        batch: int = 500,
        lease_seconds: float = 60.0,
        poll_seconds: float = 1.0,
        linger_seconds: float = 0.002,
        clock: Callable[[], float] = time.time,
        rand: Callable[[], float] = random.random,
    ) -> None:
        for name, value in (
            ("concurrency", concurrency),
            ("per_endpoint", per_endpoint),
            ("batch", batch),
            ("lease_seconds", lease_seconds),
            ("poll_seconds", poll_seconds),
        ):
            if not value > 0:
                raise ValueError(f"{name}: expected a positive number, got {value!r}")
        self.store = store
        self.worker_id = worker_id or default_worker_id()
        self._resolve = resolve
        self._owns_transport = transport is None
        # The transport bounds connections only; the dispatcher's own per-endpoint workers
        # bound each URL, so two URLs on one host share no limit a black hole could fill.
        self._transport = transport or HttpTransport(limit=concurrency)
        self._policy = policy or RetryPolicy()
        self._settle = settle
        self._circuit_policy = circuit or CircuitPolicy()
        self._circuits: dict[str, Circuit] = {}
        # Stages a 410 answered, in this process: their queued jobs are not sent.
        self._gone: set[tuple[str, str]] = set()
        self.metrics = DeliveryMetrics()
        self._concurrency = concurrency
        self._per_endpoint = per_endpoint
        self._batch = batch
        self._lease_seconds = lease_seconds
        self._poll_seconds = poll_seconds
        self._linger_seconds = linger_seconds
        self._clock = clock
        self._rand = rand
        # Claimed and not yet recorded: sending, waiting for a slot, or queued for the writer.
        self._outstanding: set[Lease] = set()
        # Room held for hand-offs whose write is under way (see `reserve`).
        self._reserved = 0
        # Claimed ahead of sending: enough to keep every slot busy while the next claim and
        # the last group commit run; per endpoint less than the whole, so one black hole
        # cannot hold every claim.
        self._capacity = concurrency + 2 * batch
        self._allowance = per_endpoint + batch
        # Jobs a worker holds; those still queued for a worker are in their slot's queue.
        self._jobs: set[_Job] = set()
        self._workers: set[asyncio.Task[None]] = set()
        self._slots: dict[str, _Slot] = {}
        self._stage_urls: dict[tuple[str, str], str] = {}
        self._global = asyncio.Semaphore(concurrency)
        # Finished attempts and unused claims, waiting for the next turn to record them.
        self._finished: deque[_Item] = deque()
        self._failed_turns = 0
        self._nudge = asyncio.Event()
        self._fresh = False  # woken for new deliveries since the last turn
        # The endpoints the last claim held back, and when, if it found nothing else; and
        # how many wakes there have been (one during that claim makes it news all the same).
        self._fruitless: tuple[frozenset[tuple[str, str]], float] | None = None
        self._wakes = 0
        # Until when turns need not claim: the last claim found all there was (see `_limit`).
        self._quiet_until = 0.0
        self._stop_requested = asyncio.Event()
        self._stopped = asyncio.Event()
        self._stopping = False
        self._closing = False
        self._running = False
        self._grace = 10.0

    # -- control ----------------------------------------------------------------------------

    def wake(self) -> None:
        """New deliveries were committed: look now instead of at the next poll.
        Call it from the dispatcher's event loop."""
        self._fresh = True
        self._fruitless = None
        self._quiet_until = 0.0
        self._wakes += 1
        self._nudge.set()

    def state(self) -> dict[str, Any]:
        """A snapshot for health checks and the dashboard. ``circuits`` maps each endpoint
        URL seen to its circuit: "closed", "open" or "half-open"; ``endpoints`` maps those
        with claimed deliveries to how many are queued and whether claims skip them for now
        ("saturated": the queue is full)."""
        circuits = {url: state.state.value for url, state in self._circuits.items()}
        for url in (*self._slots, *self._stage_urls.values()):
            circuits.setdefault(url, circuit.State.CLOSED.value)
        endpoints = {
            url: {"queued": slot.backlog, "saturated": slot.backlog >= self._allowance}
            for url, slot in self._slots.items()
        }
        return {
            "worker": self.worker_id,
            "running": self._running and not self._stopping,
            "in_flight": sum(1 for job in self._jobs if job.started_at is not None),
            "claimed": len(self._outstanding),
            "circuits": circuits,
            "endpoints": endpoints,
        }

    # -- hand-off: deliveries claimed in the write that enqueues them ------------------------

    def reserve(self, stages: Sequence[tuple[str, str]]) -> Handoff | None:
        """Room for one delivery to each of ``stages`` (project, stage), claimed in the
        write that enqueues them (`claiming_these`); None when there is none to give: not
        running or stopping, no room, or a stage held back (its endpoint's queue full, its
        circuit open, or a 410 just answered). Pass what is returned to `adopt` once the
        write is done, or to `unreserve` if it failed."""
        if not self._running or self._stopping or self._room() < len(stages):
            return None
        now = self._clock()
        held = self._held_back(now)
        if any(stage in self._gone or stage in held for stage in stages):
            return None
        self._reserved += len(stages)
        return Handoff(self.worker_id, now + self._lease_seconds, len(stages))

    async def adopt(self, handoff: Handoff, claimed: Sequence[Claimed], resolve: Resolve) -> None:
        """Send what the write of ``handoff`` claimed, each to its stage's endpoint as
        ``resolve`` gives it (in place of the dispatcher's own: the caller knows the stages
        as that write found them). Once stopping, they are released instead, at once: the
        turns that would record it may be over."""
        self._reserved -= handoff.count
        if not self._stopping:
            self._accept(claimed, await self._resolve_all(_stages_of(claimed), resolve))
            return
        try:
            async with self.store.transaction() as conn:
                await release_leases(conn, [item.lease for item in claimed], now=self._clock())
        except Exception:  # the step committed: it must not fail for this
            log.exception(
                "releasing %d handed-off deliveries failed: they go when their leases end",
                len(claimed),
            )

    def unreserve(self, handoff: Handoff) -> None:
        """Give back the room of a ``handoff`` whose write did not happen."""
        self._reserved -= handoff.count

    def circuit_states(self) -> dict[tuple[str, str], str]:
        """The circuit of each (project, stage) this dispatcher has sent for."""
        return {
            stage: self._circuits.get(url, circuit.CLOSED).state.value
            for stage, url in self._stage_urls.items()
        }

    def metric_families(self) -> list[Family]:
        """What this dispatcher counted, and its circuits, for ``GET /metrics``."""
        return [*self.metrics.families(), *circuit_families(self.circuit_states())]

    async def stop(self, grace: float = 10.0) -> None:
        """Stop claiming, give requests in flight up to ``grace`` seconds, record what
        finished and release the rest. Returns when ``run()`` has returned."""
        self._grace = grace
        self._stopping = True
        self._stop_requested.set()
        self._nudge.set()
        if self._running:
            await self._stopped.wait()

    async def run(self) -> None:
        """Deliver until ``stop()`` (once: a stopped dispatcher stays stopped)."""
        if self._running:
            raise RuntimeError("this dispatcher is already running")
        self._running = True
        self._stopped.clear()
        turns = asyncio.create_task(self._store_loop(), name="hookstage-dispatcher-store")
        try:
            await self._stop_requested.wait()
            await self._drain(self._grace)
        finally:
            self._release_queued()
            await self._cancel_jobs(self._jobs)
            self._closing = True
            self._nudge.set()
            await turns
            if self._owns_transport:
                await self._transport.aclose()
            self._running = False
            self._stopped.set()

    # -- the store: one task, one transaction per turn -----------------------------------------

    async def _store_loop(self) -> None:
        """Each turn records what finished and claims what there is room for, in one
        transaction: half the commits of doing each apart, and never two at once."""
        wait = 0.0
        while True:
            if wait:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._nudge.wait(), wait)
                # Let a burst of finished attempts share the turn; new deliveries go at once
                # (their latency is the point; they come grouped by their own commits).
                lingering = not self._fresh and len(self._finished) < self._batch
                if self._linger_seconds and lingering:
                    await asyncio.sleep(self._linger_seconds)
            self._nudge.clear()
            self._fresh = False
            if self._closing and not self._finished:
                return
            wait = await self._turn()

    async def _turn(self) -> float:
        """One turn; returns how long to wait for a nudge before the next (0: go on)."""
        items = [self._finished.popleft() for _ in range(min(len(self._finished), self._batch))]
        if not all(self._final(item) for item in items):
            self._quiet_until = 0.0  # what it records may make a delivery due: look again
        now = self._clock()
        exclude = self._held_back(now)
        limit = self._limit(len(items), exclude, now)
        if not items and limit <= 0:
            return self._idle_wait(now)  # a finished attempt nudges
        wakes = self._wakes
        try:
            claimed, due = await self._exchange(items, limit, now, exclude)
        except Exception:
            return await self._turn_failed(items, now)
        self._failed_turns = 0
        if limit > 0:
            self._claimed(claimed, due, limit, exclude, now, news=wakes != self._wakes)
        for item in items:
            self._outstanding.discard(_lease_of(item))
        await self._launch(claimed)
        if self._finished or self._closing or (limit > 0 and len(claimed) == limit):
            return 0.0  # more to record (or closing), or a backlog to keep claiming from
        # Due by `now` yet not claimed means held back (its endpoint full, an earlier
        # delivery of its task pending, another worker's row lock): a turn that records
        # something looks again, or the poll does.
        wait = self._idle_wait(now)
        if limit > 0 and due is not None and due > now:
            wait = min(due - now, wait)
        return wait

    def _limit(self, recorded: int, exclude: list[tuple[str, str]], now: float) -> int:
        """How many to claim this turn. Nothing while the last claim held back the same
        endpoints (or fewer) and found nothing else, until new deliveries wake the dispatcher
        or a poll passes: the claim steps over every due delivery of the stages it holds back,
        and one full endpoint with a big backlog made each such claim a scan of all of it
        (measured: 180 ms a claim beside 1M pending, the drain's CPU per delivery doubled).
        Nothing either in a quiet spell: the last claim said nothing is due yet, and nothing
        since may have made something due (see `_claimed`)."""
        if self._stopping:
            return 0
        if self._fruitless is not None:
            held, since = self._fruitless
            if held.issubset(exclude) and now < since + self._poll_seconds:
                return 0
        if now < self._quiet_until:
            return 0
        return min(self._room() + recorded, self._batch)

    def _claimed(
        self,
        claimed: list[Claimed],
        due: float | None,
        limit: int,
        exclude: list[tuple[str, str]],
        now: float,
        *,
        news: bool,
    ) -> None:
        """What a claim says about the next ones. One that found nothing else with stages
        held back is fruitless (see `_limit`). One that took less than its limit, with no
        wake during it, makes the turns quiet (no claim) until the next delivery is due or a
        poll passes: handed-off deliveries leave turns that only record, and a claim in each
        found nothing. Whatever the turn recorded came before the claim, in its transaction."""
        if exclude:
            found_nothing = not claimed and not news
            self._fruitless = (frozenset(exclude), now) if found_nothing else None
        quiet = not news and len(claimed) < limit
        poll = now + self._poll_seconds
        self._quiet_until = (poll if due is None else min(due, poll)) if quiet else 0.0

    def _final(self, item: _Item) -> bool:
        """Whether recording ``item`` makes nothing newly due: a delivered or given-up attempt
        that disables and settles nothing. (It may let a later delivery of its task go; but
        that one was due already, and a claim that saw a due delivery it could not take
        starts no quiet spell.)"""
        if not isinstance(item, AttemptResult) or self._eventful(item):
            return False
        return item.decision.verdict in (Verdict.DELIVERED, Verdict.GIVE_UP)

    def _idle_wait(self, now: float) -> float:
        """How long a turn that claimed nothing more waits for a nudge (see `idle_wait`)."""
        fruitless = None if self._fruitless is None else self._fruitless[1] + self._poll_seconds
        ends = (now + self._poll_seconds, self._quiet_until, fruitless)
        return idle_wait(now, ends, self._until_probe(now))

    def _room(self) -> int:
        """How many more deliveries may be claimed. The claims a full endpoint holds do not
        count against the others' room: it is left out of the claims until it drains, and
        counting them let one black hole shrink every other endpoint's claims (measured: a
        healthy stage beside one went from about 0.78x to about 0.9x of its rate alone).
        Twice the capacity bounds them all, however many endpoints are full."""
        taken = len(self._outstanding) + self._reserved
        full = sum(slot.backlog for slot in self._slots.values() if slot.backlog >= self._allowance)
        return min(self._capacity - taken + full, 2 * self._capacity - taken)

    def _until_probe(self, now: float) -> float:
        """Seconds until an open circuit lets its probe go (its stages are claimed again)."""
        # Only ahead of now: once a probe is due, claims take the stage's deliveries again.
        times = [t for c in self._circuits.values() if (t := c.probe_at) is not None and t > now]
        return min(times) - now if times else float("inf")

    async def _exchange(
        self, items: list[_Item], limit: int, now: float, exclude: list[tuple[str, str]]
    ) -> tuple[list[Claimed], float | None]:
        results = [item for item in items if isinstance(item, AttemptResult)]
        leases = [item for item in items if isinstance(item, Lease)]
        if not leases and not any(self._eventful(result) for result in results):
            return await self._exchange_plainly(results, limit, now, exclude)
        claimed: list[Claimed] = []
        due = None
        async with self.store.transaction() as conn:
            await record_results(conn, results)
            await release_leases(conn, leases, now=now)
            await self._disable_gone(conn, results, now)
            await self._settled(conn, results)
            if limit > 0:
                claimed, due = await claim_and_next_due(
                    conn,
                    now=now,
                    lease_seconds=self._lease_seconds,
                    worker=self.worker_id,
                    limit=limit,
                    exclude=exclude,
                )
        return claimed, due

    def _eventful(self, result: AttemptResult) -> bool:
        """Whether recording ``result`` does more than write it (see `_exchange`): what
        `_disable_gone` and `_settled` act on. Keep the three in step."""
        disables = result.decision.verdict is Verdict.DISABLE
        return disables or (result.settles and self._settle is not None)

    async def _exchange_plainly(
        self, results: list[AttemptResult], limit: int, now: float, exclude: list[tuple[str, str]]
    ) -> tuple[list[Claimed], float | None]:
        """`_exchange` of a turn that only records and claims: one `Store.write` (on SQLite,
        one trip that holds the writers' turn only to send it)."""
        dialect = self.store.dialect
        until = now + self._lease_seconds
        statements = recording(dialect, results)
        if limit > 0:
            statements += claiming(
                dialect, until=until, now=now, worker=self.worker_id, limit=limit, exclude=exclude
            )
        if not statements:
            return [], None
        found = await self.store.write(statements)
        if limit <= 0:
            return [], None
        return claimed_from(found, until=until, worker=self.worker_id, limit=limit)

    async def _disable_gone(
        self, conn: AsyncConnection, results: list[AttemptResult], now: float
    ) -> None:
        for result in results:
            if result.decision.verdict is not Verdict.DISABLE:
                continue
            if result.project_id is None or result.stage_id is None:
                continue
            stage = (result.project_id, result.stage_id)
            url = self._stage_urls.get(stage)
            where = safe_url(url) if url is not None else "the endpoint"
            reason = f"{where} answered 410 Gone to delivery {result.lease.delivery_id}"
            await disable_endpoints(conn, [stage], now=now, reason=reason)

    async def _settled(self, conn: AsyncConnection, results: list[AttemptResult]) -> None:
        # A pass-mode stage has nothing to settle: skipping it saves a savepoint and the
        # hook's reads in nearly every turn (most turns record pass-mode attempts only).
        results = [r for r in results if r.settles]
        if self._settle is None or not results:
            return
        # The turn's own writes fail the turn, not the settling the block below survives.
        await flush(conn)
        try:
            async with conn.begin_nested():
                await self._settle(conn, results)
        except Exception:
            # The attempts are recorded all the same: failing the turn would hold every
            # delivery's result hostage to one task. A re-send settles the task again.
            ids = ", ".join(r.lease.delivery_id for r in results[:5])
            log.exception("settling gate stages failed for deliveries %s", ids)

    async def _turn_failed(self, items: list[_Item], now: float) -> float:
        self._failed_turns += 1
        log.exception("delivery bookkeeping failed (%d in a row)", self._failed_turns)
        if self._failed_turns < _TURN_TRIES:
            self._finished.extendleft(reversed(items))  # nothing was written: try again
            return min(self._poll_seconds, 0.2 * self._failed_turns)
        if len(items) > 1:
            await self._record_singly(items, now)
        # Unrecorded claims come back when their leases expire: at least once holds.
        for item in items:
            self._outstanding.discard(_lease_of(item))
        return min(self._poll_seconds, 0.2 * self._failed_turns)

    async def _record_singly(self, items: list[_Item], now: float) -> None:
        """The group failed every try: record each item on its own, so that one that cannot
        be recorded does not send all the others again when their leases expire."""
        for item in items:
            try:
                await self._exchange([item], 0, now, [])
            except Exception:
                delivery_id = _lease_of(item).delivery_id
                log.exception("delivery %s: its attempt could not be recorded", delivery_id)

    async def _launch(self, claimed: list[Claimed]) -> None:
        self._accept(claimed, await self._resolve_all(_stages_of(claimed), self._resolve))

    def _accept(
        self,
        claimed: Sequence[Claimed],
        endpoints: Mapping[tuple[str, str], Endpoint | Exception | None],
    ) -> None:
        # The store handed these out: whatever disabled their stage has been undone.
        self._gone.difference_update(endpoints)
        for item in claimed:
            self._outstanding.add(item.lease)
            self._start(item, endpoints[item.project_id, item.stage_id])

    def _held_back(self, now: float) -> list[tuple[str, str]]:
        """Stages not to claim for now: their endpoint's queue is full or its circuit open."""
        full = {url for url, slot in self._slots.items() if slot.backlog >= self._allowance}
        full.update(url for url, c in self._circuits.items() if circuit.blocked(c, now))
        if not full:
            return []
        return [stage for stage, url in self._stage_urls.items() if url in full]

    async def _resolve_all(
        self, stages: Iterable[tuple[str, str]], resolve: Resolve
    ) -> dict[tuple[str, str], Endpoint | Exception | None]:
        found: dict[tuple[str, str], Endpoint | Exception | None] = {}
        for project_id, stage_id in stages:
            try:
                found[project_id, stage_id] = await resolve(project_id, stage_id)
            except Exception as exc:
                log.exception("resolving stage %s of project %s failed", stage_id, project_id)
                found[project_id, stage_id] = exc
        return found

    def _start(self, item: Claimed, endpoint: Endpoint | Exception | None) -> None:
        now = self._clock()
        if endpoint is None:
            gone = Outcome.failure("no-endpoint", "the stage is gone or is no longer a Webhook")
            self._put(_result(item, now, gone, Decision.give_up()))
        elif isinstance(endpoint, Exception):
            broken = Outcome.failure("internal", f"resolving the stage: {type(endpoint).__name__}")
            self._put(_result(item, now, broken, self._decide(item, self._policy, broken)))
        else:
            self._stage_urls[item.project_id, item.stage_id] = endpoint.url
            self._enqueue(_Job(item, endpoint))

    # -- sending ----------------------------------------------------------------------------

    def _enqueue(self, job: _Job) -> None:
        # A worker per delivery up to the endpoint's limit, then they take turns: a task per
        # delivery waiting on a semaphore cost more than the send itself.
        url = job.endpoint.url
        slot = self._slots.get(url)
        if slot is None:
            slot = self._slots[url] = _Slot()
        slot.queue.append(job)
        slot.backlog += 1
        if slot.workers < self._per_endpoint:
            slot.workers += 1
            worker = asyncio.create_task(self._work(url, slot))
            self._workers.add(worker)
            worker.add_done_callback(self._workers.discard)

    async def _work(self, url: str, slot: _Slot) -> None:
        me = asyncio.current_task()
        try:
            while slot.queue:
                job = slot.queue.popleft()
                job.task = me
                self._jobs.add(job)
                try:
                    await self._send(job)
                except Exception:
                    # A bug after the attempt must not strand this worker's queue or the
                    # claim: handed back, the delivery goes again (at least once holds).
                    log.exception("delivery %s: sending failed unexpectedly", job.claimed.id)
                    self._put(job.claimed.lease)
                finally:
                    self._jobs.discard(job)
                    slot.backlog -= 1
        finally:
            slot.workers -= 1
            if slot.backlog == 0 and self._slots.get(url) is slot:
                del self._slots[url]

    async def _send(self, job: _Job) -> None:
        claimed, endpoint = job.claimed, job.endpoint
        try:
            # The endpoint's workers bound its share; a global slot bounds them all.
            async with self._global:
                if self._stopping or self._lease_too_short(job) or not self._admit(job):
                    self._put(claimed.lease)  # not attempted: its attempt is not counted
                    return
                started_at = job.started_at = self._clock()
                outcome = await self._attempt(claimed, endpoint, started_at)
        except asyncio.CancelledError:
            started = job.started_at
            self._put(claimed.lease if started is None else self._interrupted(claimed, started))
            raise
        decision = self._decide(claimed, endpoint.policy or self._policy, outcome)
        self._observe(claimed, endpoint, outcome, decision)
        self._put(_result(claimed, started_at, outcome, decision, settles=endpoint.settles))

    def _admit(self, job: _Job) -> bool:
        """Whether the job may be attempted now: its stage did not just answer 410, and its
        endpoint's circuit lets it through (the first one after a cool-down is the probe)."""
        if (job.claimed.project_id, job.claimed.stage_id) in self._gone:
            return False
        url = job.endpoint.url
        before = self._circuits.get(url, circuit.CLOSED)
        after, admitted = circuit.admit(before, self._clock())
        if after != before:
            self._circuits[url] = after
        return admitted

    def _observe(
        self, claimed: Claimed, endpoint: Endpoint, outcome: Outcome, decision: Decision
    ) -> None:
        """Count the attempt, move its endpoint's circuit, log it."""
        now = self._clock()
        stage = (claimed.project_id, claimed.stage_id)
        self.metrics.attempt(*stage, outcome_of(outcome.status, outcome.error_class))
        if decision.verdict is Verdict.DELIVERED:
            self.metrics.delivered(*stage, now - claimed.created_at)
        elif decision.verdict is Verdict.DISABLE:
            self._gone.add(stage)
        before = self._circuits.get(endpoint.url, circuit.CLOSED)
        signal = circuit.signal_of(outcome.status, outcome.error_class)
        after = circuit.record(before, self._circuit_policy, signal, now)
        if after is not before:
            self._circuits[endpoint.url] = after
        _log_attempt(claimed, endpoint, outcome, decision, now)
        if after.state is not before.state:
            _log_circuit(endpoint, after)

    def _lease_too_short(self, job: _Job) -> bool:
        # Sending when the lease may end mid-request risks a second worker sending too.
        needed = min(job.endpoint.timeout, self._lease_seconds / 2)
        return job.claimed.lease_until - self._clock() < needed

    async def _attempt(self, claimed: Claimed, endpoint: Endpoint, started_at: float) -> Outcome:
        try:
            headers = {
                "Content-Type": "application/json",
                "User-Agent": _USER_AGENT,
                "X-Hookstage-Delivery": claimed.id,
                "X-Hookstage-Attempt": str(claimed.attempt),
                **endpoint.signer.headers(
                    claimed.body, msg_id=claimed.id, timestamp=int(started_at)
                ),
            }
            request = OutboundRequest(
                endpoint.url, claimed.body, headers, endpoint.timeout, endpoint.ssl
            )
            return await self._transport.send(request)
        except Exception as exc:  # a bug here must fail one attempt, not lose the delivery
            log.exception("delivery %s: sending failed unexpectedly", claimed.id)
            return Outcome.failure("internal", type(exc).__name__)

    def _decide(self, claimed: Claimed, policy: RetryPolicy, outcome: Outcome) -> Decision:
        return decide(
            policy, attempt=claimed.attempt, outcome=outcome, now=self._clock(), rand=self._rand()
        )

    def _interrupted(self, claimed: Claimed, started_at: float) -> AttemptResult:
        now = self._clock()
        outcome = Outcome.failure(
            "cancelled",
            "the worker stopped before an answer came",
            duration_ms=(now - started_at) * 1000,
        )
        # Interrupted, not refused: due again at once (for this or another worker).
        return _result(claimed, started_at, outcome, Decision.retry(now))

    def _release_queued(self) -> None:
        for url, slot in list(self._slots.items()):
            while slot.queue:
                self._put(slot.queue.popleft().claimed.lease)
                slot.backlog -= 1
            if slot.backlog == 0 and slot.workers == 0:
                del self._slots[url]

    async def _drain(self, grace: float) -> None:
        self._release_queued()
        await self._cancel_jobs(job for job in self._jobs if job.started_at is None)
        running = [job.task for job in self._jobs if job.task is not None]
        if running:
            await asyncio.wait(running, timeout=grace)

    async def _cancel_jobs(self, jobs: Iterable[_Job]) -> None:
        tasks = [job.task for job in list(jobs) if job.task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    # -- recording --------------------------------------------------------------------------

    def _put(self, item: _Item) -> None:
        self._finished.append(item)
        self._nudge.set()


def idle_wait(now: float, ends: Iterable[float | None], probe_in: float) -> float:
    """How long an idle dispatcher waits for a nudge: until the first of ``ends`` still
    ahead of ``now`` (a poll; the end of a quiet spell, or of a fruitless claim's wait),
    or ``probe_in`` seconds, when an open circuit lets its probe go. Give it a poll: it is
    then always more than zero, as it must be, since a turn that waits nothing and claims
    nothing would run again without ever yielding to the event loop. An end already passed
    (a fruitless claim's stale wait) is no reason to turn at once."""
    ahead = [end - now for end in ends if end is not None and end > now]
    return min([*ahead, probe_in])


def _stages_of(claimed: Iterable[Claimed]) -> set[tuple[str, str]]:
    return {(item.project_id, item.stage_id) for item in claimed}


def _lease_of(item: _Item) -> Lease:
    return item if isinstance(item, Lease) else item.lease


def _result(
    claimed: Claimed,
    started_at: float,
    outcome: Outcome,
    decision: Decision,
    *,
    settles: bool = True,
) -> AttemptResult:
    answered = outcome.status is not None
    return AttemptResult(
        lease=claimed.lease,
        started_at=started_at,
        duration_ms=outcome.duration_ms,
        status_code=outcome.status,
        error_class=outcome.error_class,
        error=outcome.error,
        response_headers=dict(outcome.headers) if answered else None,
        response_body=outcome.body if answered else None,
        decision=decision,
        project_id=claimed.project_id,
        stage_id=claimed.stage_id,
        task_id=claimed.task_id,
        settles=settles,
    )


# -- logs: ids, stage, status and error class; never a header, a body or a secret --------------

_VERDICT_LOG = {
    Verdict.DELIVERED: (logging.DEBUG, "delivered"),
    Verdict.RETRY: (logging.INFO, "attempt failed; retry scheduled"),
    Verdict.GIVE_UP: (logging.WARNING, "attempt failed; retries exhausted, delivery failed"),
    Verdict.DISABLE: (
        logging.WARNING,
        "endpoint answered 410 Gone; the stage's endpoint is disabled until enabled",
    ),
}


def _log_attempt(
    claimed: Claimed, endpoint: Endpoint, outcome: Outcome, decision: Decision, now: float
) -> None:
    level, message = _VERDICT_LOG[decision.verdict]
    if not log.isEnabledFor(level):
        return
    context: dict[str, Any] = {
        "delivery_id": claimed.id,
        "project_id": claimed.project_id,
        "stage_id": claimed.stage_id,
        "task_id": claimed.task_id,
        "attempt": claimed.attempt,
        "status": outcome.status,
        "error_class": outcome.error_class,
        "duration_ms": round(outcome.duration_ms, 1),
        "verdict": decision.verdict.value,
        "endpoint": safe_url(endpoint.url),
    }
    if decision.verdict is Verdict.RETRY and decision.retry_at is not None:
        context["retry_in_s"] = round(max(0.0, decision.retry_at - now), 1)
    log.log(level, message, extra=context)


def _log_circuit(endpoint: Endpoint, now: Circuit) -> None:
    context = {"endpoint": safe_url(endpoint.url), "circuit": now.state.value}
    if now.state is circuit.State.OPEN:
        log.warning(
            "circuit opened: no attempts to this endpoint for %g s", now.cooldown, extra=context
        )
    elif now.state is circuit.State.CLOSED:
        log.info("circuit closed: the endpoint answers again", extra=context)
