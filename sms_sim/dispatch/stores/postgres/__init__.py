"""The PostgreSQL store: for workers on several hosts. Needs the optional ``postgres`` extra
(psycopg 3 and psycopg-pool), which only this package imports: ``open_store`` imports it
only for a ``postgresql://`` URL. ``store`` is the ``DispatchStore``, ``schema`` its numbered
migrations, ``claim`` and ``submit`` the two hot paths, ``rows`` the rest of the SQL."""

from sms_sim.dispatch.stores.postgres.database import migrate_database
from sms_sim.dispatch.stores.postgres.store import PostgresStore

__all__ = ["PostgresStore", "migrate_database"]
