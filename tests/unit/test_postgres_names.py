"""How errors and logs name a PostgreSQL database: never its password or options, and as a
URL even when libpq refuses the URL itself (it said "cannot open database a PostgreSQL
database (its URL could not be parsed)" for an unknown query parameter)."""

from __future__ import annotations

import pytest

pytest.importorskip("psycopg")

from sms_sim.dispatch.stores.postgres.errors import safe_name  # noqa: E402


@pytest.mark.parametrize(("dsn", "name"), [
    ("postgresql://sms:s3cret@db.example:5433/alerts", "postgresql://sms@db.example:5433/alerts"),
    ("postgresql://sms:s3cret@db.example/alerts?bogus=1", "postgresql://sms@db.example/alerts"),
    ("postgresql://sms:s3cret@[::1]:5432/alerts", "postgresql://sms@[::1]:5432/alerts"),
    ("postgresql://sms:s3cret@db/alerts?options=-csearch_path%3Dsms", "postgresql://sms@db/alerts"),
    ("host=db bogus=1 password=s3cret", "a PostgreSQL database (its URL could not be parsed)"),
])
def test_a_database_is_named_without_its_password_even_when_libpq_refuses_it(
        dsn: str, name: str) -> None:
    assert safe_name(dsn) == name and "s3cret" not in safe_name(dsn)
