"""An unreachable database makes the Store raise StoreUnavailableError quickly, never hang."""

from __future__ import annotations

import asyncio
import socket
import time
from datetime import UTC, datetime

import pytest

from bot.storage import Scope, Store, StoreUnavailableError, Window, sqlite_url


def _closed_port() -> int:
    """A loopback TCP port with nothing listening (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def _every_call_fails_fast(store: Store, limit_s: float) -> None:
    now = datetime.now(UTC)
    calls = [
        lambda: store.is_opted_out(1),
        lambda: store.record_analysis(guild_id=1, channel_id=2, user_id=3, message_id=4, label="angry",
                                      confidence=0.9, probabilities={"angry": 0.9}, model_version="m", duration_s=1.0),
        lambda: store.should_alert(1, 2, 3, "angry", 0.99, now=now),
        lambda: store.insights(Scope.guild(1), Window.WEEK, now=now),
        lambda: store.delete_user_data(3),
        lambda: store.purge_expired(now=now),
    ]  # fmt: skip
    for call in calls:
        t0 = time.monotonic()
        with pytest.raises(StoreUnavailableError) as info:
            await call()
        assert time.monotonic() - t0 < limit_s
        assert "unavailable" in info.value.user_message


async def test_refused_postgresql_port_raises_fast():
    store = Store(f"postgresql+asyncpg://postgres@127.0.0.1:{_closed_port()}/ser", connect_timeout_s=2.0)
    try:
        t0 = time.monotonic()
        with pytest.raises(StoreUnavailableError):
            await store.start()
        assert time.monotonic() - t0 < 2.0
        await _every_call_fails_fast(store, limit_s=2.0)
        assert not store.ready and not store.known_opted_out(3)
    finally:
        await store.close()


async def test_silent_server_times_out_after_connect_timeout():
    """A peer that accepts TCP but never answers (a black hole) costs one connect timeout."""

    peers: list[asyncio.StreamWriter] = []

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peers.append(writer)
        await reader.read()  # until the client gives up or the test closes the socket
        writer.close()

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    store = Store(f"postgresql+asyncpg://postgres@127.0.0.1:{port}/ser", connect_timeout_s=0.5, retry_after_s=30)
    try:
        t0 = time.monotonic()
        with pytest.raises(StoreUnavailableError):
            await store.start()
        assert 0.4 < time.monotonic() - t0 < 3.0
        # While the database is known to be down, calls fail at once.
        await _every_call_fails_fast(store, limit_s=0.2)
    finally:
        await store.close()
        for writer in peers:
            writer.close()
        server.close()
        await server.wait_closed()
        await asyncio.sleep(0)  # let the handlers see EOF and finish


async def test_unopenable_sqlite_file_raises_and_store_recovers_later(tmp_path):
    path = tmp_path / "missing-dir" / "ser.db"
    store = Store(sqlite_url(path), retry_after_s=0.0)
    try:
        await _every_call_fails_fast(store, limit_s=2.0)
        # The directory appears (e.g. a volume is mounted): the next call migrates and works.
        path.parent.mkdir()
        assert await store.is_opted_out(3) is False
        assert store.ready and path.is_file()
    finally:
        await store.close()


async def test_open_disposes_engine_when_database_is_down():
    with pytest.raises(StoreUnavailableError):
        await Store.open(f"postgresql+asyncpg://postgres@127.0.0.1:{_closed_port()}/ser")


def test_unsupported_urls_are_refused():
    for url in ("mysql://root@localhost/x", "not a url"):
        with pytest.raises(ValueError):
            Store(url)
