"""How PostgreSQL's errors reach an operator: one line, the server's own sentence, no SQL.

The server follows its message with CONTEXT and STATEMENT lines quoting the SQL that
failed (a lock timeout inside the claim quoted the claim's statement); joined into the
one line ``store_error`` makes, they buried the message under internals.
"""

from __future__ import annotations

import pytest

from sms_sim.dispatch.errors import StoreBusyError, StoreError

psycopg = pytest.importorskip("psycopg", reason="the PostgreSQL extra is not installed")

DSN = "postgresql://sms:s3cret@db.example:5432/alerts"


def test_a_lock_timeout_is_its_first_sentence_only_and_waits_out() -> None:
    from sms_sim.dispatch.stores.postgres.errors import store_error

    raised = psycopg.errors.LockNotAvailable(
        "canceling statement due to lock timeout\n"
        "CONTEXT:  SQL statement \"SELECT pg_advisory_xact_lock(7, hashtext(current_schema()))\"")
    error = store_error(DSN, raised, doing="claiming from")
    assert isinstance(error, StoreBusyError)
    assert str(error) == ("claiming from database postgresql://sms@db.example:5432/alerts: "
                          "canceling statement due to lock timeout")


def test_an_error_without_text_is_named_by_its_kind_and_never_shows_the_password() -> None:
    from sms_sim.dispatch.stores.postgres.errors import store_error

    error = store_error(DSN, psycopg.errors.UndefinedTable(""))
    assert type(error) is StoreError
    assert str(error) == "database postgresql://sms@db.example:5432/alerts: UndefinedTable"
    assert "s3cret" not in str(store_error(DSN, psycopg.OperationalError(
        "connection to server failed: password s3cret rejected")))
