"""One replication for the planner: when do the first k messages get delivered, with S
identical senders?

The same model as ``simulate`` (arrivals, send times, failures, retries with backoff, rate
limits: the shared ``policy`` functions), run by a loop specialised to what a plan asks:

* **Random numbers belong to messages, not senders.** Message j's send times, outcomes and
  backoffs are drawn, in order, from one stream of the replication when it first starts; first
  attempts start in arrival order whatever the number of senders, so message j gets the same
  draws at every count. (``simulate`` gives each sender its own stream, which with identical
  senders is the same model in distribution.) This is the classic synchronisation of common
  random numbers, and it makes a replication without retries *monotone*: with FIFO service by
  identical senders, adding a sender never starts any message later (the sorted free times of
  S + 1 senders are elementwise no later than those of S), so the k-th delivery time never
  grows with S. The planner's search relies on this.
* **It stops as soon as the plan knows enough**: once every asked-for rank has been delivered
  and the deadline has passed (so "delivered by the deadline" is final), or at ``horizon_s``
  (a rank not delivered by then is reported ``inf``).
* **It reports bounds that hold for every count**: the occupancy of the first-attempt prefix
  up to the k-th deliverable message (``prefix_work_s``) and the largest such occupancy, from
  which ``plan_bounds`` derives a lower bound of the k-th delivery time at any S; and
  whether any send waited for a sender before the run stopped (if none did, more senders
  change nothing the plan looks at: everything up to the stop would happen the same way).
* **Validity** (``config.valid_for_s``) as ``simulate`` models it (``virtual.sms``): from
  each message's arrival; a message whose validity has ended when a sender would start it
  is expired, never sent; a failed attempt whose retry would come due at or after the end
  expires at once; a receipt that would come after the end says expired
  (``policy.receipt_at``). An expired message is never delivered. Expiry only ever removes
  deliveries, and a message expires at some count only if it would at a later start: so
  the messages delivered at any count are among those ``ever_delivered`` says (each started
  the moment it is ready, as with unlimited senders), and ``deliverable`` stays an upper
  bound for every count. Expired messages do no work, so the first-attempt prefix work and
  the receipt bound (which count every earlier message's work) are not reported with a
  validity, and a replication is not claimed monotone in S then (``Question.monotone``).

Identical senders make the pool a count of idle senders, not a set of identities.
"""

from __future__ import annotations

import heapq
import math
import random
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from sms_sim.config import (
    ArrivalKind,
    RetryPolicy,
    ServiceDistribution,
    SimulationConfig,
    SenderConfig,
)
from sms_sim.generate import segment_counts
from sms_sim.model import ErrorClass, ReceiptStatus
from sms_sim.sim.virtual.receipt_bound import ReceiptBound, ReceiptBoundBuilder
from sms_sim.policy import (
    arrival_times,
    arrivals_rng,
    latency_sampler,
    receipt_at,
    receipt_sampler,
    retry_delay_after,
    send_classifier,
    send_slot_s,
)

__all__ = ["DeliveryModel", "DeliveryRun", "run_deliveries", "message_rng", "draw_chain",
           "deliverable_count", "ever_delivered", "message_receipts_rng"]

_INF = math.inf


def message_rng(seed: int) -> random.Random:
    """The stream a replication under ``seed`` draws its messages' sends from."""
    return random.Random(f"sms_sim:{seed}:plan:messages")


def message_receipts_rng(seed: int) -> random.Random:
    """The stream a replication under ``seed`` draws its messages' receipts from (one
    receipt per message, drawn with its sends, so it is the same at every count)."""
    return random.Random(f"sms_sim:{seed}:plan:receipts")


@dataclass(frozen=True, slots=True, kw_only=True)
class DeliveryModel:
    """One replication at one sender count (small and picklable: it crosses processes).

    ``config`` gives the messages, arrivals, retry policy and the replication's seed;
    ``ranks`` are the 1-based delivery ranks to time, ascending; ``prefix_rank`` is the
    rank whose first-attempt prefix work is measured (the goal's k). Deliveries by
    ``deadline_s`` are counted. With ``received`` a delivery is a delivered receipt (drawn
    per message from ``config.receipts``), not an accepted send.
    """

    config: SimulationConfig
    sender: SenderConfig
    senders: int
    ranks: tuple[int, ...]
    prefix_rank: int
    deadline_s: float
    horizon_s: float
    received: bool = False

    @property
    def is_plain(self) -> bool:
        """Whether nothing of the SMS model (issue 14) is on: no segments, classes,
        per-segment time, receipts or validity."""
        return not (self.received or self.config.content is not None
                    or self.sender.has_sms_fields or self.config.valid_for_s is not None)


@dataclass(frozen=True, slots=True, kw_only=True)
class DeliveryRun:
    """What one replication showed (times in simulated seconds).

    ``rank_times_s`` pairs with ``DeliveryModel.ranks``: when that many messages had been
    delivered, ``inf`` if not by the horizon (or never). ``deliverable`` is how many
    messages would ever be delivered (their draws include a success), once every message
    has been drawn, else None. ``prefix_work_s`` and ``prefix_max_s`` are the summed and
    the largest occupancy of the first attempts of messages 1..k', k' the index of the
    ``prefix_rank``-th deliverable message, None until drawn that far.
    """

    senders: int
    rank_times_s: tuple[float, ...]
    delivered_by_deadline: int
    failed_attempts: int
    dead: int
    deliverable: int | None
    prefix_work_s: float | None
    prefix_max_s: float | None
    waited: bool
    kth_arrival_s: float | None
    receipt_bound: ReceiptBound | None = None  # with ``received``: see ``receipt_bound``
    expired: int = 0  # messages expired by the stop (with a validity)


# A message's attempts: (send time, ok, backoff after, how long the sender is held).
Chain = list[tuple[float, bool, float, float]]
Receipt = tuple[ReceiptStatus, float] | None  # the message's receipt draw, when asked for


class _Ready:
    """Work waiting for a sender: ``count`` first attempts that arrived at ``ready_at``
    (``chain`` None: drawn when each starts), or attempt ``attempt`` of a drawn ``chain``
    of a message that arrived at ``arrived``."""

    __slots__ = ("ready_at", "count", "chain", "attempt", "receipt", "arrived")

    def __init__(self, ready_at: float, count: int, chain: Chain | None, attempt: int,
                 receipt: Receipt = None, arrived: float | None = None) -> None:
        self.ready_at = ready_at
        self.count = count
        self.chain = chain
        self.attempt = attempt
        self.receipt = receipt
        self.arrived = ready_at if arrived is None else arrived


def draw_chain(
    sample: Callable[[], float], uniform: Callable[[], float], sender: SenderConfig,
    segments: int, policy: RetryPolicy, rng: random.Random,
    classify: Callable[[float], ErrorClass | None] | None = None,
) -> Chain:
    """A message of ``segments`` segments' attempts as (send time, ok, backoff before the
    next, sender hold), drawn in this order (send time, outcome, backoff) until one
    succeeds, one fails permanently or ``max_attempts`` have failed: the draws of
    ``simulate`` (``policy.send_classifier``, ``retry_delay_after``, ``send_slot_s``)."""
    classify = classify or send_classifier(sender)
    extra_s = segments * sender.per_segment_s
    chain: Chain = []
    for attempt in range(1, policy.max_attempts + 1):
        latency = sample() + extra_s
        error_class = classify(uniform())
        slot = send_slot_s(sender, latency, segments, error_class)
        if error_class is None:
            chain.append((latency, True, 0.0, slot))
            break
        delay = retry_delay_after(policy, attempt, error_class, rng,
                                  retry_after_s=sender.retry_after_s)
        chain.append((latency, False, 0.0 if delay is None else delay, slot))
        if delay is None:
            break
    return chain


def ever_delivered(chain: Chain, receipt: Receipt, valid_for_s: float | None) -> bool:
    """Whether a message with these draws is delivered (its receipt says delivered, when
    drawn) if every attempt starts the moment it is ready, as with unlimited senders. At
    any count its attempts start no sooner, and every expiry test (``simulate``'s, see the
    module docstring) only fails later ones more, so False means never delivered."""
    if not chain[-1][1]:
        return False
    if valid_for_s is None:
        return receipt is None or receipt[0] is ReceiptStatus.DELIVERED
    started = 0.0  # since arrival: a first attempt starts then, inside any validity
    for latency, ok, backoff, _ in chain[:-1]:
        assert not ok
        started += latency + backoff
        if started >= valid_for_s:  # its retry would come due too late: expired at once
            return False
    if receipt is None:
        return True
    return receipt_at(started + chain[-1][0], receipt, valid_for_s)[0] is ReceiptStatus.DELIVERED


def run_deliveries(model: DeliveryModel) -> DeliveryRun:
    """Run one replication. Pure CPU, no I/O: Ctrl-C in the calling process interrupts it
    as ``KeyboardInterrupt``."""
    config = model.config
    sender = model.sender
    if (config.arrivals.kind is ArrivalKind.BURST and config.retry.max_attempts == 1
            and sender.rate_limit_per_s is None and model.is_plain):
        return _run_burst(model)
    return _run_general(model)


def _latency_cap(sender: SenderConfig) -> float | None:
    """The largest send time the distribution allows, None if unbounded."""
    if sender.distribution is ServiceDistribution.UNIFORM:
        return sender.mean_s + sender.deviation_s
    if sender.distribution is ServiceDistribution.CONSTANT or sender.mean_s == 0:
        return sender.mean_s
    return None


# Hot loop: locals bound once, ``start`` inlined (see the comment in the loop).
def _run_burst(model: DeliveryModel) -> DeliveryRun:  # noqa: C901
    """Every message at t = 0, one attempt, no rate limit: a heap of S completion times,
    popped in time order; each pop starts the next message on the freed sender."""
    config = model.config
    assert config.seed is not None
    rng = message_rng(config.seed)
    sample = latency_sampler(rng, model.sender)
    uniform = rng.random
    failure_rate = model.sender.failure_rate
    ranks = model.ranks
    times = [_INF] * len(ranks)
    next_rank = ranks[0] if ranks else 0
    rank_index = 0
    deadline, horizon = model.deadline_s, model.horizon_s
    prefix_rank = model.prefix_rank
    bounded = _latency_cap(model.sender) is not None
    remaining = config.num_messages
    deliverable = delivered = by_deadline = failed = 0
    work = prefix_work = prefix_max = max_latency = 0.0
    prefix_known = prefix_rank == 0
    heappop, heapreplace = heapq.heappop, heapq.heapreplace
    busy: list[tuple[float, bool]] = []

    def start() -> tuple[float, bool]:
        nonlocal deliverable, work, max_latency, prefix_work, prefix_max, prefix_known
        latency = sample()
        ok = uniform() >= failure_rate
        work += latency
        if not bounded and latency > max_latency:
            max_latency = latency
        if ok:
            deliverable += 1
            if deliverable == prefix_rank:
                prefix_work, prefix_max, prefix_known = work, max_latency, True
        return latency, ok

    for _ in range(min(remaining, model.senders)):
        busy.append(start())
        remaining -= 1
    heapq.heapify(busy)
    t = 0.0
    while busy:
        t, ok = busy[0]
        if t > horizon or (rank_index == len(ranks) and t > deadline):
            break
        if ok:
            delivered += 1
            if t <= deadline:
                by_deadline += 1
            if delivered == next_rank:
                times[rank_index] = t
                rank_index += 1
                next_rank = ranks[rank_index] if rank_index < len(ranks) else 0
        else:
            failed += 1
        if remaining:
            remaining -= 1
            # ``start`` inlined for the hot path: the prefix bookkeeping only until known.
            latency = sample()
            ok = uniform() >= failure_rate
            if prefix_known:
                if ok:
                    deliverable += 1
            else:
                work += latency
                if not bounded and latency > max_latency:
                    max_latency = latency
                if ok:
                    deliverable += 1
                    if deliverable == prefix_rank:
                        prefix_work, prefix_max, prefix_known = work, max_latency, True
            heapreplace(busy, (t + latency, ok))
        else:
            heappop(busy)
    if bounded:
        prefix_max = _latency_cap(model.sender) or 0.0
    return DeliveryRun(
        senders=model.senders,
        rank_times_s=tuple(times),
        delivered_by_deadline=by_deadline,
        failed_attempts=failed,
        dead=0,
        deliverable=deliverable if remaining == 0 else None,
        prefix_work_s=prefix_work if prefix_known else None,
        prefix_max_s=prefix_max if prefix_known else None,
        waited=config.num_messages > model.senders,
        kth_arrival_s=0.0 if model.prefix_rank <= config.num_messages else None,
    )


def _run_general(model: DeliveryModel) -> DeliveryRun:  # noqa: C901 - one loop, see below
    """Any arrivals, retries, rate limits and the SMS model. Events: send outcomes and
    sender rests (a heap), the next arrival, retries coming due (a heap) and, with
    ``received``, delivered receipts arriving (a heap). Ready work waits in a FIFO of
    first-attempt batches and due retries, as in ``simulate``."""
    config = model.config
    assert config.seed is not None
    policy = config.retry
    max_attempts = policy.max_attempts
    rng = message_rng(config.seed)
    sample = latency_sampler(rng, model.sender)
    uniform = rng.random
    classify = send_classifier(model.sender)
    sender = model.sender
    counts = segment_counts(config.content, config.num_messages, config.seed)
    draw_receipt = _receipt_draw(model)
    valid_for_s = config.valid_for_s
    valid_for = _INF if valid_for_s is None else valid_for_s
    # Expired messages do no work: the receipt bound and the prefix work, which count
    # every earlier message's, do not hold with a validity (see the module docstring).
    bound = (None if draw_receipt is None or valid_for_s is not None
             else ReceiptBoundBuilder(config.num_messages))

    ranks = model.ranks
    times = [_INF] * len(ranks)
    rank_index = 0
    deadline, horizon = model.deadline_s, model.horizon_s
    prefix_rank = model.prefix_rank
    arrivals = arrival_times(config.arrivals, config.num_messages, arrivals_rng(config.seed))
    next_arrival, arrival_count = next(arrivals, (_INF, 0))
    # (time, seq, frees a sender, outcome: None for a rest ending, else
    # (ok, chain, attempt, receipt, arrived))
    events: list[tuple[float, int, bool, tuple[bool, Chain, int, Receipt, float] | None]] = []
    # due, seq, chain, next attempt, receipt, arrived
    retries: list[tuple[float, int, Chain, int, Receipt, float]] = []
    receipts: list[float] = []  # when delivered receipts arrive (with ``received``)
    waiting: deque[_Ready] = deque()
    idle = model.senders
    seq = 0
    drawn = deliverable = delivered = by_deadline = failed = dead = 0
    prefix_work = prefix_max = 0.0
    prefix_known = prefix_rank == 0
    prefix_valid = valid_for_s is None
    expired = 0
    waited = False
    t = 0.0
    arrived_count = 0
    kth_arrival: float | None = None

    def start(now: float) -> None:
        """Start the head of ``waiting`` on an idle sender at ``now``, or expire it (its
        draws made all the same, so that message j's are the same at every count)."""
        nonlocal idle, seq, drawn, deliverable, prefix_work, prefix_max, prefix_known, waited
        nonlocal expired
        head = waiting[0]
        arrived = head.arrived
        if now > head.ready_at:
            waited = True
        chain = head.chain
        attempt = head.attempt
        receipt = head.receipt
        if chain is None:  # a first attempt: draw the message's sends now
            chain = draw_chain(sample, uniform, sender, next(counts), policy, rng, classify)
            receipt = None if draw_receipt is None else draw_receipt()
            drawn += 1
            occupancy = chain[0][3]
            if not prefix_known:
                prefix_work += occupancy
                prefix_max = max(prefix_max, occupancy)
            received = ever_delivered(chain, receipt, valid_for_s)
            if received:
                deliverable += 1
                if deliverable == prefix_rank:
                    prefix_known = True
            if bound is not None:
                assert receipt is not None
                bound.first(occupancy, chain[0][0] + receipt[1] if received else None)
            head.count -= 1
            if not head.count:
                waiting.popleft()
        else:
            waiting.popleft()
        if now >= arrived + valid_for:  # as in ``simulate``: expired, never sent
            expired += 1
            return
        latency, ok, _, slot = chain[attempt]
        idle -= 1
        seq += 1
        outcome = (ok, chain, attempt, receipt, arrived)
        if slot > latency:  # the outcome now, the sender free after its rest
            heapq.heappush(events, (now + latency, seq, False, outcome))
            seq += 1
            heapq.heappush(events, (now + slot, seq, True, None))
        else:
            heapq.heappush(events, (now + latency, seq, True, outcome))

    def count_delivery(at: float) -> None:
        nonlocal delivered, by_deadline, rank_index
        delivered += 1
        if at <= deadline:
            by_deadline += 1
        while rank_index < len(ranks) and ranks[rank_index] == delivered:
            times[rank_index] = at
            rank_index += 1

    while True:
        t_ext = next_arrival
        if retries and retries[0][0] < t_ext:
            t_ext = retries[0][0]
        if receipts and receipts[0] < t_ext:
            t_ext = receipts[0]
        # As in ``simulate``: an arrival or a due retry at the same time as an outcome
        # comes first.
        t = events[0][0] if events and events[0][0] < t_ext else t_ext
        if t == _INF or t > horizon or (rank_index == len(ranks) and t > deadline):
            break
        if events and events[0][0] < t_ext:
            _, _, frees, outcome = heapq.heappop(events)
            if frees:
                idle += 1
            if outcome is not None:
                ok, chain, attempt, receipt, arrived = outcome
                if ok:
                    if receipt is None:
                        count_delivery(t)
                    else:
                        status, at = receipt_at(
                            t, receipt, None if valid_for_s is None else arrived + valid_for)
                        if status is ReceiptStatus.DELIVERED:
                            heapq.heappush(receipts, at)
                else:
                    failed += 1
                    if attempt + 1 < len(chain):
                        due = t + chain[attempt][2]
                        if due < arrived + valid_for:
                            seq += 1
                            heapq.heappush(retries, (due, seq, chain, attempt + 1, receipt,
                                                     arrived))
                        else:
                            expired += 1  # its retry would come due too late
                    elif max_attempts > 1:
                        dead += 1
        elif receipts and receipts[0] == t_ext:
            count_delivery(heapq.heappop(receipts))
        elif next_arrival <= t_ext:
            waiting.append(_Ready(t, arrival_count, None, 0))
            arrived_count += arrival_count
            if kth_arrival is None and arrived_count >= prefix_rank:
                kth_arrival = t
            next_arrival, arrival_count = next(arrivals, (_INF, 0))
        else:
            due, _, chain, attempt, receipt, arrived = heapq.heappop(retries)
            waiting.append(_Ready(due, 1, chain, attempt, receipt, arrived))
        while idle and waiting:
            start(t)
    complete = drawn == config.num_messages
    return DeliveryRun(
        senders=model.senders, rank_times_s=tuple(times), delivered_by_deadline=by_deadline,
        failed_attempts=failed, dead=dead, deliverable=deliverable if complete else None,
        prefix_work_s=prefix_work if prefix_known and prefix_valid else None,
        prefix_max_s=prefix_max if prefix_known and prefix_valid else None,
        # Work still queued at the stop has been waiting: more senders might start it
        # sooner. Work not yet arrived cannot change anything before the stop.
        waited=waited or bool(waiting), kth_arrival_s=kth_arrival,
        receipt_bound=None if bound is None else bound.result(), expired=expired,
    )


def _receipt_draw(model: DeliveryModel) -> Callable[[], tuple[ReceiptStatus, float]] | None:
    """The replication's per-message receipt draw when a plan targets receipts."""
    if not model.received:
        return None
    config = model.config
    assert config.seed is not None and config.receipts is not None
    return receipt_sampler(message_receipts_rng(config.seed), config.receipts)


def deliverable_count(model: DeliveryModel) -> int:
    """How many of the replication's messages would ever be delivered: its message draws
    alone, in the order a run makes them (first attempts start in arrival order, so the
    same at every count), without simulating time."""
    config, sender = model.config, model.sender
    assert config.seed is not None
    rng = message_rng(config.seed)
    sample = latency_sampler(rng, sender)
    classify = send_classifier(sender)
    counts = segment_counts(config.content, config.num_messages, config.seed)
    draw_receipt = _receipt_draw(model)
    total = 0
    for segments in counts:
        chain = draw_chain(sample, rng.random, sender, segments, config.retry, rng, classify)
        receipt = None if draw_receipt is None else draw_receipt()
        total += ever_delivered(chain, receipt, config.valid_for_s)
    return total
