"""``open_store``: which store each URL form opens, where the SQLite file lands, that
``create`` is honoured, and that every URL it cannot serve is one clear line."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from sms_sim.dispatch.errors import StoreError
from sms_sim.dispatch.stores import (
    MemoryStore,
    SqliteStore,
    check_store_url,
    is_transient,
    open_store,
)
from sms_sim.errors import ConfigError
from tests.conftest import T0, one_message


def test_memory_opens_a_fresh_empty_memory_store_each_time() -> None:
    first = open_store("memory:")
    assert isinstance(first, MemoryStore)
    first.submit(one_message(), T0)
    second = open_store("memory:", create=True)
    assert isinstance(second, MemoryStore)
    assert second.messages() == []
    assert len(first.messages()) == 1


@pytest.mark.parametrize("form", ["sqlite://{abs}", "sqlite:///{abs}", "sqlite:{abs}",
                                  "{abs}"])
def test_absolute_sqlite_url_forms_and_a_plain_path_open_that_file(
        tmp_path: Path, form: str) -> None:
    path = tmp_path / "abs.db"
    store = open_store(form.format(abs=path), create=True)
    try:
        assert isinstance(store, SqliteStore)
        assert Path(store.path) == path
        store.submit(one_message(), T0)
    finally:
        store.close()
    assert path.is_file()


@pytest.mark.parametrize("form", ["sqlite:rel.db", "rel.db"])
def test_relative_forms_are_relative_to_the_working_directory(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, form: str) -> None:
    monkeypatch.chdir(tmp_path)
    open_store(form, create=True).close()
    assert (tmp_path / "rel.db").is_file()


def test_a_path_object_and_percent_escapes_in_a_url(tmp_path: Path) -> None:
    open_store(tmp_path / "as path.db", create=True).close()
    assert (tmp_path / "as path.db").is_file()
    escaped = str(tmp_path / "with space.db").replace(" ", "%20")
    open_store(f"sqlite://{escaped}", create=True).close()
    assert (tmp_path / "with space.db").is_file()


def test_a_path_that_is_not_a_url_scheme_stays_a_path(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    open_store("./odd:name.db", create=True).close()
    assert (tmp_path / "odd:name.db").is_file()
    open_store("data:2024.db", create=True).close()  # an unknown prefix without // is a name
    assert (tmp_path / "data:2024.db").is_file()


@pytest.mark.parametrize("form", ["sqlite://{abs}", "{abs}"])
def test_create_false_refuses_a_missing_database_and_creates_nothing(
        tmp_path: Path, form: str) -> None:
    path = tmp_path / "missing.db"
    with pytest.raises(StoreError, match="no database at"):
        open_store(form.format(abs=path))  # create defaults to False
    assert not path.exists()
    open_store(form.format(abs=path), create=True).close()
    open_store(form.format(abs=path), create=False).close()  # now it exists: fine


@pytest.mark.parametrize("url", [
    "postgresql://user:s3cret@127.0.0.1:1/sms",
    "postgres://user:s3cret@127.0.0.1:1/sms",
    "PostgreSQL://user:s3cret@127.0.0.1:1/sms",
])
def test_postgresql_urls_open_postgres_and_errors_never_echo_the_password(url: str) -> None:
    """Port 1 refuses connections: the store names the server, in one line, without the
    password (the PostgreSQL cases themselves run in tests/contract and tests/integration)."""
    pytest.importorskip("psycopg")
    with pytest.raises(StoreError) as caught:
        open_store(url, create=True)
    message = str(caught.value)
    assert "postgresql://user@127.0.0.1:1/sms" in message
    assert "\n" not in message and "s3cret" not in message


@pytest.mark.parametrize(("url", "fragment"), [
    ("mysql://localhost/db", "unknown store URL scheme 'mysql'"),
    ("redis://localhost:6379/0", "unknown store URL scheme 'redis'"),
    ("sqlite://host/x.db", "a sqlite URL names no host"),
    ("sqlite:", "a sqlite URL needs a file path"),
    ("sqlite://", "a sqlite URL needs a file path"),
    ("sqlite:///", "a sqlite URL needs a file path"),
    ("sqlite:///x.db?mode=ro", "sqlite URLs take no options"),
    ("memory:somewhere", "a memory store takes no path"),
])
def test_urls_it_cannot_serve_are_one_clear_line(url: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as caught:
        open_store(url, create=True)
    assert fragment in str(caught.value)
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize(("url", "transient"), [
    ("memory:", True), ("MEMORY:", True), (":memory:", True), ("", True), ("  ", True),
    ("sqlite::memory:", True), ("sqlite:%3Amemory%3A", True),
    ("sqlite:///:memory:", False),  # an absolute file called :memory:
    ("./:memory:", False), ("alert.db", False), ("sqlite:///tmp/a.db", False),
    ("data:2024.db", False), ("sqlite:", False),  # malformed, refused by open_store
])
def test_is_transient_names_every_spelling_of_a_store_that_dies_with_its_process(
        url: str, transient: bool) -> None:
    assert is_transient(url) is transient


def test_read_only_reads_and_refuses_every_write(tmp_path: Path) -> None:
    path = tmp_path / "ro.db"
    writer = open_store(path, create=True)
    writer.submit(one_message(), T0)
    writer.close()
    reader = open_store(f"sqlite://{path}", read_only=True)
    try:
        assert [m.id for m in reader.messages()] == [1]
        with pytest.raises(StoreError, match="readonly"):
            reader.submit(one_message(), T0)
    finally:
        reader.close()
    with pytest.raises(StoreError, match="no database at"):
        open_store(tmp_path / "missing.db", read_only=True)
    assert not (tmp_path / "missing.db").exists()
    with pytest.raises(ConfigError, match="cannot be created"):
        open_store(path, create=True, read_only=True)


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any file whatever its mode")
def test_a_file_the_reader_may_not_read_is_named_as_such(tmp_path: Path) -> None:
    path = tmp_path / "secret.db"
    open_store(path, create=True).close()
    path.chmod(0)
    with pytest.raises(StoreError, match="cannot read database .*: permission denied"):
        open_store(path, read_only=True)


@pytest.mark.parametrize(("url", "secret"), [
    ("postgresql://postgres:sec ret@127.0.0.1:5432/a", "sec ret"),
    ("postgresql://postgres:Hun%zzter@127.0.0.1/a", "Hun%zzter"),
    ("postgresql://postgres:Hun/ter@127.0.0.1:5432/a", "ter@127"),
    ("postgresql://postgres:Hun@ter@127.0.0.1/a", "Hun@ter"),
])
def test_a_password_that_needs_percent_encoding_is_refused_without_being_shown(
        url: str, secret: str) -> None:
    # Unencoded, libpq read part of the password as the host or the port, and its error
    # (and the URL shown beside it) quoted it: "failed to resolve host 'postgres'".
    with pytest.raises(ConfigError, match="not a valid postgresql:// URL") as caught:
        check_store_url(url)
    assert secret not in str(caught.value) and "Hun" not in str(caught.value)
    with pytest.raises(ConfigError):
        open_store(url)


@pytest.mark.parametrize("url", [
    "postgresql://u:p%40ss@127.0.0.1:5432/db?sslmode=disable", "postgresql:///db",
    "postgresql://h1:5432,h2:5433/db", "postgresql://[::1]:5432/db",
    "postgresql://u@/db?host=/tmp",
])
def test_libpq_urls_pass_the_check(url: str) -> None:
    assert check_store_url(url) == url
