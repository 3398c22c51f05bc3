"""``MemoryStore``'s API keys, opt-out lists and delivery receipts (lock held by each call,
as in the store itself)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from sms_sim.dispatch.contract import DeliveryStatus
from sms_sim.dispatch.dlrs import DlrOutcome, DlrReport, DlrResult, check_dlrs, dlr_outcome, \
    split_key
from sms_sim.dispatch.keys import ApiKey
from sms_sim.dispatch.optouts import OptOut, OptOutResult
from sms_sim.dispatch.stores.memory_state import MemoryState, has_been_sent
from sms_sim.dispatch.validation import check_listing

__all__ = ["MemoryLists"]

_D = DeliveryStatus


class MemoryLists(MemoryState):
    """The ``KeyStore``, ``OptOutStore`` and ``DlrStore`` parts of ``MemoryStore``."""

    # --- API keys ----------------------------------------------------------------------

    def add_api_key(self, key: ApiKey, secret_hash: str) -> None:
        with self._lock:
            self._check_open()
            self._api_keys.add(key, secret_hash)

    def api_key(self, key_id: str) -> tuple[ApiKey, str] | None:
        with self._lock:
            self._check_open()
            return self._api_keys.get(key_id)

    def revoke_api_key(self, key_id: str, now: float) -> ApiKey:
        with self._lock:
            self._check_open()
            return self._api_keys.revoke(key_id, now)

    def api_keys(self, *, tenant: str | None = None) -> list[ApiKey]:
        with self._lock:
            self._check_open()
            return self._api_keys.listed(tenant)

    # --- opt-outs and delivery receipts ------------------------------------------------

    def add_opt_outs(self, tenant: str, phones: Iterable[str], now: float) -> OptOutResult:
        wanted = list(dict.fromkeys(phones))
        with self._lock:
            self._check_open()
            added = self._opt_outs.add(tenant, wanted, now)
            listed = set(wanted)
            suppressed = 0
            touched: set[int] = set()
            for message in self._messages.values():
                if message.tenant != tenant:
                    continue
                for delivery in self._of(message.id):
                    if delivery.recipient in listed and delivery.status in (_D.PENDING,
                                                                            _D.RETRYING):
                        delivery.status = _D.SUPPRESSED
                        suppressed += 1
                        touched.add(message.id)
            for message_id in touched:
                self._complete_if_done(message_id, now)
            return OptOutResult(added=len(added), suppressed=suppressed)

    def remove_opt_out(self, tenant: str, phone: str) -> bool:
        with self._lock:
            self._check_open()
            return self._opt_outs.remove(tenant, phone)

    def opt_outs(self, tenant: str, *, after: str | None = None,
                 limit: int = 1000) -> list[OptOut]:
        check_listing(None, limit)
        with self._lock:
            self._check_open()
            return self._opt_outs.page(tenant, after, limit)

    def record_dlrs(self, reports: Sequence[DlrReport], now: float) -> DlrResult:
        reports = check_dlrs(reports, now)
        with self._lock:
            self._check_open()
            outcomes: list[DlrOutcome] = []
            for key, status, at in reports:
                uid, recipient = split_key(key)
                delivery = self._find(uid, recipient)
                if delivery is None:
                    outcomes.append(DlrOutcome.UNKNOWN)
                elif not has_been_sent(delivery):
                    outcomes.append(self._held.hold(uid, recipient, status, at))
                else:
                    verdict = dlr_outcome(delivery.status, status)
                    if verdict is DlrOutcome.APPLIED:
                        delivery.status, delivery.dlr_at = _D(status), at
                    outcomes.append(verdict)
            return DlrResult(outcomes=tuple(outcomes))
