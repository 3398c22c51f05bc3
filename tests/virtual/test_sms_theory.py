"""The SMS model of the virtual-time mode (issue 14) against theory, in the style of
``test_virtual_theory``: fixed seeds, and each tolerance Z = 4 standard deviations derived
from the model's own variance (plus any deterministic end effect, named), or an exact
count where the model leaves nothing to chance.

Texts: 200 ASCII letters are GSM-7, two segments (153 + 47); 200 Cyrillic letters are
UCS-2, three segments (67 + 67 + 66): the issue's "four" for a 200-character Unicode alert
is one too many.
"""

from __future__ import annotations

import math
from statistics import NormalDist

from sms_sim import SenderConfig, SimulationConfig
from sms_sim.config import Content, ReceiptModel, ServiceDistribution
from sms_sim.model import ReceiptStatus
from sms_sim.report import Report, SmsStats
from sms_sim.segments import Encoding, segments
from sms_sim.sim.virtual.run import simulate

Z = 4.0
GSM_200 = "a" * 200
UCS2_200 = "ж" * 200


def _sms(report: Report) -> SmsStats:
    assert report.sms is not None and report.is_accounted
    return report.sms


def test_the_texts_used_here_have_the_segments_stated() -> None:
    assert tuple(segments(GSM_200)) == (Encoding.GSM7, 2)
    assert tuple(segments(UCS2_200)) == (Encoding.UCS2, 3)


def test_rate_limited_senders_send_c_r_over_k_messages_per_second_exactly() -> None:
    """c senders limited to r segments/s sending k-segment messages whose send (latency
    plus k * per_segment) is shorter than the k / r slot: each sender starts one message
    every k / r seconds from t = 0, so c r / k messages/s and c r segments/s, and a burst of
    N = c * j messages ends at (j - 1) k / r plus the last send, exactly."""
    c, r, k, per_message = 5, 2.0, 3, 60
    latency, per_segment = 0.01, 0.002
    sender = SenderConfig(latency, 0.0, 0.0, ServiceDistribution.CONSTANT,
                          rate_limit_per_s=r, per_segment_s=per_segment)
    report = simulate(SimulationConfig(num_messages=c * per_message, senders=[sender] * c,
                                       seed=1, content=Content(text=UCS2_200)), output=None)
    stats = _sms(report)
    assert report.sent == c * per_message and stats.segments_sent == k * report.sent
    send_s = latency + k * per_segment
    assert math.isclose(report.elapsed_s, (per_message - 1) * k / r + send_s, rel_tol=1e-12)
    starts_span_s = report.elapsed_s - send_s
    # Messages started per second of the span of starts: c r / k (one slot per sender less).
    assert math.isclose((report.sent - c) / starts_span_s, c * r / k, rel_tol=1e-12)
    assert math.isclose(stats.segments_sent / report.sent, k)


def _uniform_max_moments(low: float, high: float, shift: float, floor: float) -> tuple[
    float, float
]:
    """Mean and variance of Y = max(X + shift, floor), X uniform on [low, high]."""
    u = min(max(floor - shift, low), high)  # X below u gives the floor
    width = high - low
    p_floor = (u - low) / width
    # Above u, Y = X + shift: integrate y and y^2 over [u + shift, high + shift].
    a, b = u + shift, high + shift
    first = p_floor * floor + (b * b - a * a) / 2 / width
    second = p_floor * floor * floor + (b**3 - a**3) / 3 / width
    return first, second - first * first


def test_rate_limit_and_per_segment_time_set_throughput_in_segments_per_second() -> None:
    """A sender is held Y = max(X + k ps, k / r) per message (X the uniform send time, ps
    the per-segment time, r the limit in segments/s): the slot of its segments or the
    send, whichever is longer. A work-conserving pool of c senders finishes N messages
    between W / c and W / c + one longest hold, W the sum of N iid Y, sd(W) = sd(Y) sqrt(N).
    Segments per second are k times messages per second."""
    c, n, k = 4, 40_000, 2
    mean, dev, per_segment, rate = 0.1, 0.05, 0.005, 20.0
    sender = SenderConfig(mean, dev, 0.0, rate_limit_per_s=rate, per_segment_s=per_segment)
    report = simulate(SimulationConfig(num_messages=n, senders=[sender] * c, seed=2,
                                       content=Content(text=GSM_200)), output=None)
    stats = _sms(report)
    hold_mean, hold_var = _uniform_max_moments(mean - dev, mean + dev, k * per_segment,
                                               k / rate)
    longest = max(mean + dev + k * per_segment, k / rate)
    tolerance_s = Z * math.sqrt(hold_var * n) / c + longest
    assert abs(report.elapsed_s - n * hold_mean / c) <= tolerance_s
    assert stats.segments_sent == k * n == stats.segments_attempted
    # Without the limit the same senders are faster: the limit binds (k / r > mean + k ps
    # would be a pure c r / k; here it binds only for the shorter draws).
    assert n * (mean + k * per_segment) / c < n * hold_mean / c


def _convolution_cdf(t: float, mean_s: float, mu: float, sigma: float, steps: int = 4000
                     ) -> float:
    """P(X + D <= t) for X exponential (mean ``mean_s``) and D lognormal(mu, sigma),
    independent: the integral over x in [0, t] of f_X(x) P(D <= t - x), by Simpson's rule
    (the integrand is smooth and vanishes at x = t)."""
    if t <= 0:
        return 0.0
    phi = NormalDist().cdf
    h = t / steps

    def integrand(x: float) -> float:
        rest = t - x
        inside = phi((math.log(rest) - mu) / sigma) if rest > 0 else 0.0
        return math.exp(-x / mean_s) / mean_s * inside

    total = integrand(0.0) + integrand(t)
    total += 4 * sum(integrand((2 * i - 1) * h) for i in range(1, steps // 2 + 1))
    total += 2 * sum(integrand(2 * i * h) for i in range(1, steps // 2))
    return total * h / 3


def _quantile(q: float, cdf: object) -> float:
    assert callable(cdf)
    low, high = 0.0, 1.0
    while cdf(high) < q:
        high *= 2
    for _ in range(60):
        middle = (low + high) / 2
        if cdf(middle) < q:
            low = middle
        else:
            high = middle
    return (low + high) / 2


def test_time_to_delivered_percentiles_match_the_convolution_of_send_and_receipt_delay(
) -> None:
    """With as many senders as messages nobody waits: a message's time to send is its send
    time X (exponential, mean 2 s) and its time to delivered X + D, D the receipt delay
    (lognormal, median 5 s, sigma 1), independent of X and of whether the receipt says
    delivered. The exact p50, p95, p99 of the n delivered must lie within Z sd of the
    quantiles of the convolution, computed by quadrature; the sample q-quantile has
    sd sqrt(q (1 - q) / n) / f(x_q), f the convolution's density (a central difference of
    its CDF)."""
    n, mean_s = 5_000, 2.0
    model = ReceiptModel(median_s=5.0, sigma=1.0, undelivered_rate=0.02, lost_rate=0.03)
    sender = SenderConfig(mean_s, 0.0, 0.0, ServiceDistribution.EXPONENTIAL)
    report = simulate(SimulationConfig(num_messages=n, senders=[sender] * n, seed=3,
                                       receipts=model), output=None)
    stats = _sms(report)
    assert stats.receipts is not None
    delivered = stats.receipts[ReceiptStatus.DELIVERED]
    # The kinds are multinomial over the n sends.
    for status, p in ((ReceiptStatus.DELIVERED, 0.95), (ReceiptStatus.UNDELIVERED, 0.02),
                      (ReceiptStatus.UNKNOWN, 0.03)):
        assert abs(stats.receipts[status] - n * p) <= Z * math.sqrt(n * p * (1 - p))
    assert stats.receipts[ReceiptStatus.EXPIRED] == 0  # no validity: nothing expires
    mu, sigma = math.log(model.median_s), model.sigma

    def cdf(t: float) -> float:
        return _convolution_cdf(t, mean_s, mu, sigma)

    for q, measured in ((0.50, stats.p50_delivered_s), (0.95, stats.p95_delivered_s),
                        (0.99, stats.p99_delivered_s)):
        assert measured is not None
        expected = _quantile(q, cdf)
        step = expected * 1e-3
        density = (cdf(expected + step) - cdf(expected - step)) / (2 * step)
        sd = math.sqrt(q * (1 - q) / delivered) / density
        assert abs(measured - expected) <= Z * sd, (q, measured, expected, sd)


def test_validity_shorter_than_the_drain_time_expires_what_the_rate_cannot_start() -> None:
    """c senders at r segments/s with k-segment messages and a send shorter than its slot
    start messages at 0, k / r, 2 k / r, ...: those starting before the validity V are sent,
    c ceil(V r / k) in all, and every other message of the burst expires unsent (exactly;
    the drain time N k / (c r) is longer than V). Receipts: a sent message completing at
    s_j gets an expired receipt when its delay D exceeds V - s_j (unless lost), so the
    expected count is sum_j (1 - lost) P(D > V - s_j), a sum of independent Bernoullis
    whose variance is sum p_j (1 - p_j)."""
    c, r, k, n, valid_for, latency = 30, 1.0, 2, 1_000, 30.0, 0.05
    model = ReceiptModel(median_s=5.0, sigma=1.5, undelivered_rate=0.02, lost_rate=0.03)
    sender = SenderConfig(latency, 0.0, 0.0, ServiceDistribution.CONSTANT, rate_limit_per_s=r)
    report = simulate(SimulationConfig(num_messages=n, senders=[sender] * c, seed=4,
                                       content=Content(text=GSM_200), receipts=model,
                                       valid_for_s=valid_for), output=None)
    stats = _sms(report)
    assert n * k / (c * r) > valid_for
    per_sender = math.ceil(valid_for * r / k)
    assert report.sent == c * per_sender
    assert report.expired == n - c * per_sender
    assert report.unsent == 0 and report.failed == 0

    lognormal = NormalDist(math.log(model.median_s), model.sigma)
    late = [(1 - model.lost_rate) * (1 - lognormal.cdf(math.log(valid_for - done)))
            for j in range(per_sender) for done in [j * k / r + latency]] * c
    expected = sum(late)
    sd = math.sqrt(sum(p * (1 - p) for p in late))
    assert stats.receipts is not None
    assert abs(stats.receipts[ReceiptStatus.EXPIRED] - expected) <= Z * sd


def test_error_classes_come_at_their_rates_and_throttling_slows_the_sender() -> None:
    """One attempt per message: each send is transient, permanent or throttled with its
    rate (counts binomial, within Z sd). A throttled send holds its sender for the
    retry-after R on top of the constant send time L, so a sender is held L + R with
    probability h and L otherwise: the burst's makespan is N (L + h R) / c within Z
    R sqrt(N h (1 - h)) / c plus one hold (L + R)."""
    c, n, latency, retry_after = 4, 40_000, 0.01, 0.05
    rates = {"transient": 0.1, "permanent": 0.05, "throttled": 0.08}
    sender = SenderConfig(latency, 0.0, rates["transient"], ServiceDistribution.CONSTANT,
                          permanent_rate=rates["permanent"], throttle_rate=rates["throttled"],
                          retry_after_s=retry_after)
    report = simulate(SimulationConfig(num_messages=n, senders=[sender] * c, seed=5),
                      output=None)
    stats = _sms(report)
    counts = {"transient": stats.transient, "permanent": stats.permanent,
              "throttled": stats.throttled}
    for name, p in rates.items():
        assert abs(counts[name] - n * p) <= Z * math.sqrt(n * p * (1 - p)), name
    assert report.failed == sum(counts.values())  # one attempt: every failure is final
    h = rates["throttled"]
    expected_s = n * (latency + h * retry_after) / c
    tolerance_s = Z * retry_after * math.sqrt(n * h * (1 - h)) / c + latency + retry_after
    assert abs(report.elapsed_s - expected_s) <= tolerance_s
