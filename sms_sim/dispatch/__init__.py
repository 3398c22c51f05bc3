"""Durable dispatch: the store contract and its row types (re-exported here), validation, the
service the edges call, the one dispatch loop, the worker, the providers and the stores."""

from sms_sim.dispatch.contract import (
    CancelResult,
    Claim,
    DeliveryStatus,
    DeliveryView,
    DispatchStore,
    InvalidRequestError,
    MessageStatus,
    MessageView,
    SettleKind,
    SettleResult,
    Settlement,
    SubmitResult,
)
from sms_sim.dispatch.errors import ConflictError, LockedError, NotFoundError, StoreError
from sms_sim.dispatch.requests import MessageEdit, NewMessage

__all__ = [
    "CancelResult",
    "Claim",
    "ConflictError",
    "DeliveryStatus",
    "DeliveryView",
    "DispatchStore",
    "InvalidRequestError",
    "LockedError",
    "MessageEdit",
    "MessageStatus",
    "MessageView",
    "NewMessage",
    "NotFoundError",
    "SettleKind",
    "Settlement",
    "SettleResult",
    "StoreError",
    "SubmitResult",
]
