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


# ------------------------------------------- the bot with its database down at start
async def test_bot_fails_closed_while_the_database_was_never_reachable_then_recovers(
    tmp_path, model_path, angry_note
):
    """Issue 13 (5): no opt-out list and no server settings were ever read, so nothing is analysed.

    With the database down from start-up the bot cannot know whether the
    author opted out, nor whether the server turned analysis off: a voice
    note in a server gets no answer, not even a refusal, and is not
    downloaded; one sent by direct message gets a short private refusal.
    Once the database can be opened, notes are answered and stored again.
    """
    import contextlib
    import secrets

    from bot.client import SERBot
    from bot.cogs.emotion.cog import PRIVACY_UNKNOWN, VOICE_NOTE_EVENT
    from bot.config import Settings
    from bot.discord_api import restore_defaults
    from tests._consent import allow_analysis
    from tests.fake_discord import FakeDiscord

    db_path = tmp_path / "not-mounted-yet" / "ser.db"
    outcomes: dict[int, object] = {}
    arrived = asyncio.Event()

    async def on_outcome(outcome) -> None:
        outcomes[outcome.message_id] = outcome
        arrived.set()

    async def note_outcome(fake, **where):
        attachment = fake.add_attachment(angry_note, "voice-message.ogg", "audio/ogg", voice_message=True,
                                         duration_s=4.1)  # fmt: skip
        msg = await fake.send_message(attachments=[attachment], flags=8192, **where)
        deadline = time.monotonic() + 45
        while int(msg["id"]) not in outcomes:
            assert time.monotonic() < deadline, "no outcome within 45 s"
            arrived.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(arrived.wait(), 1.0)
        return msg, attachment, outcomes[int(msg["id"])]

    async with FakeDiscord(token="MTA5.closed." + secrets.token_urlsafe(24)) as fake:
        settings = Settings(
            _env_file=None, discord_token=fake.token, discord_api_base_url=fake.base_url,
            database_url=sqlite_url(db_path), data_dir=tmp_path / "data", ser_model_path=model_path, ser_workers=1,
        )  # fmt: skip
        bot = SERBot(settings, guild_ready_timeout=0.2)
        with contextlib.suppress(ImportError):  # the admin cog's registry: a throw-away folder
            from bot.cogs.admin.settings import LifecycleSettings

            bot.lifecycle_settings = LifecycleSettings(_env_file=None, ser_registry_dir=tmp_path / "registry")
        bot.add_listener(on_outcome, f"on_{VOICE_NOTE_EVENT}")
        runner = asyncio.create_task(bot.start(settings.discord_token.get_secret_value()))
        try:
            await asyncio.wait_for(bot.wait_until_ready(), 90)
            assert bot.store is not None and not bot.store.ready  # the database was down at start-up
            channel_posts = rf"^/channels/{fake.channel['id']}/messages$"

            mark = fake.mark()
            msg, attachment, outcome = await note_outcome(fake)
            assert (outcome.status, outcome.reason, outcome.stored_id) == ("skipped", "storage_unavailable", None)
            assert not fake.find_requests("POST", channel_posts, since=mark)  # nothing said in public
            assert not fake.downloads_of(attachment)  # not even fetched

            mark = fake.mark()
            msg, attachment, outcome = await note_outcome(fake, dm=True)
            assert (outcome.status, outcome.reason) == ("refused", "storage_unavailable")
            (refusal,) = fake.find_requests("POST", rf"^/channels/{fake.dm_channel['id']}/messages$", since=mark)
            assert refusal.json["content"] == PRIVACY_UNKNOWN
            assert not fake.downloads_of(attachment)

            db_path.parent.mkdir()  # the database becomes reachable (e.g. a volume is mounted)
            await asyncio.sleep(bot.store.retry_after_s + 0.2)  # the store retries after this
            msg, attachment, outcome = await note_outcome(fake)  # read now: a new server, analysis off (issue 14)
            assert (outcome.status, outcome.reason) == ("skipped", "channel_off")
            await allow_analysis(bot, fake.guild_id)  # a manager turns it on
            mark = fake.mark()
            msg, attachment, outcome = await note_outcome(fake)
            assert outcome.status == "answered" and outcome.stored_id is not None
            (reply,) = fake.find_requests("POST", channel_posts, since=mark)
            assert str(reply.json["message_reference"]["message_id"]) == msg["id"] and reply.json["embeds"]
        finally:
            await bot.close()
            await asyncio.wait_for(runner, 30)
            restore_defaults()
