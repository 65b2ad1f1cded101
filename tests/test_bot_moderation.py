"""End to end: storage, ``/insights``, alerts, ``/settings`` and ``/privacy`` over the fake Discord.

The real SERBot with the configured model talks to a fake Discord on loopback
and stores into a real database: an SQLite file, and a throw-away PostgreSQL
database when a server answers (see ``tests/_storage_db.py``; skipped
elsewhere, required under CI). One bot per database serves the module's
tests; each test uses its own members so that their stored rows do not mix.
What the bot stored is checked by querying the database directly; expected
emotions are computed by the engine on the same bytes, never hard-coded.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import re
import secrets
import signal
import socket
import sys
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import pytest_asyncio
from sqlalchemy import select
from sqlalchemy.engine import URL

from bot.client import SERBot
from bot.cogs.emotion.cog import VOICE_NOTE_EVENT, VoiceNoteOutcome
from bot.cogs.insights.cog import CANNOT_VIEW
from bot.config import Settings
from bot.discord_api import restore_defaults
from bot.storage import Store, StoreUnavailableError, sqlite_url
from bot.storage.models import AlertLog, Analysis
from tests._storage_db import pg_admin_fixture, require_pg  # noqa: F401 (pg_admin fixture)
from tests._consent import allow_analysis
from tests.fake_discord import FakeDiscord, RecordedRequest
from tests.fake_discord import payloads as p

pytestmark = pytest.mark.asyncio(loop_scope="module")

ROOT = Path(__file__).resolve().parents[1]
IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}
EPHEMERAL = 64
VOICE_MESSAGE = 8192
MODERATOR = p.MEMBER_PERMISSIONS | p.MANAGE_MESSAGES
MANAGER = p.MEMBER_PERMISSIONS | p.MANAGE_GUILD
OUTCOME_TIMEOUT_S = 45.0


# ------------------------------------------------------------------ helpers
class Outcomes:
    """Collects the bot's ``on_voice_note_processed`` events by message id."""

    def __init__(self) -> None:
        self.by_message: dict[int, VoiceNoteOutcome] = {}
        self.changed = asyncio.Event()

    async def on_voice_note_processed(self, outcome: VoiceNoteOutcome) -> None:
        self.by_message[outcome.message_id] = outcome
        self.changed.set()

    async def wait(self, message: dict[str, Any], timeout: float = OUTCOME_TIMEOUT_S) -> VoiceNoteOutcome:
        """The outcome of ``message`` (waits for the bot to finish with it)."""
        key = int(message["id"])

        async def arrived() -> VoiceNoteOutcome:
            while key not in self.by_message:
                self.changed.clear()
                await self.changed.wait()
            return self.by_message[key]

        return await asyncio.wait_for(arrived(), timeout)


class World:
    """The fake Discord's cast: channels and members with their permissions."""

    def __init__(self, fake: FakeDiscord, modlog: dict[str, Any], random_channel: dict[str, Any]) -> None:
        self.fake = fake
        self.general = fake.channel
        self.modlog = modlog
        self.random = random_channel
        self.moderator = fake.add_member("mod", permissions=MODERATOR)  # Manage Messages
        self.manager = fake.add_member("manager", permissions=MANAGER)  # Manage Server only
        self.speakers = {name: fake.add_member(name) for name in ("carol", "dave", "erin", "frank", "gina", "hal")}
        self.bystander = fake.add_member("bob")  # an ordinary member


def user_id(member: dict[str, Any]) -> int:
    return int(member["user"]["id"])


def webhook_path(fake: FakeDiscord, interaction: dict[str, Any], suffix: str = "") -> str:
    return rf"^/webhooks/{fake.application_id}/{re.escape(interaction['token'])}{suffix}$"


def messages_path(channel: dict[str, Any]) -> str:
    return rf"^/channels/{channel['id']}/messages$"


async def callback_of(fake: FakeDiscord, interaction: dict[str, Any], since: int) -> RecordedRequest:
    path = rf"^/interactions/{interaction['id']}/{re.escape(interaction['token'])}/callback$"
    return await fake.wait_for_request("POST", path, timeout=20, since=since)


async def send_note(fake: FakeDiscord, audio: bytes, member: dict[str, Any], channel: dict[str, Any] | None = None,
                    duration_s: float = 3.5) -> tuple[dict[str, Any], dict[str, Any]]:  # fmt: skip
    """Post ``audio`` as ``member``'s voice message; return (message, attachment)."""
    note = fake.add_attachment(audio, "voice-message.ogg", "audio/ogg", voice_message=True, duration_s=duration_s)
    msg = await fake.send_message(attachments=[note], flags=VOICE_MESSAGE, member=member, channel=channel)
    return msg, note


async def rows(store: Store, **where: int) -> list[Any]:
    """Stored analyses matching ``column=value`` filters, oldest first."""
    conds = [getattr(Analysis, column) == value for column, value in where.items()]
    async with store.engine.connect() as conn:
        result = await conn.execute(select(Analysis.__table__).where(*conds).order_by(Analysis.id))
        return list(result.mappings().all())


async def slash(fake: FakeDiscord, name: str, *options: dict[str, Any], invoker: dict[str, Any],
                resolved: dict[str, Any] | None = None) -> tuple[dict[str, Any], int]:  # fmt: skip
    """Invoke ``/name`` with ``options``; return (interaction, request mark)."""
    mark = fake.mark()
    interaction = await fake.invoke_slash(name, list(options), resolved, invoker=invoker)
    return interaction, mark


async def ephemeral_answer(fake: FakeDiscord, interaction: dict[str, Any], mark: int) -> dict[str, Any]:
    """The immediate (type 4) ephemeral answer's data."""
    callback = await callback_of(fake, interaction, mark)
    assert callback.json["type"] == 4, callback.json
    data = callback.json["data"]
    assert data["flags"] & EPHEMERAL, data
    return data


def field_values(embed: dict[str, Any]) -> dict[str, str]:
    return {f["name"]: f["value"] for f in embed.get("fields", [])}


def parse_distribution(text: str) -> dict[str, int]:
    """``"`angry ███▍      ` 64% (9)"`` lines -> ``{"angry": 9}``, as a moderator reads them."""
    out = {}
    for line in text.splitlines():
        found = re.match(r"^`(\w+)\s.*`\s+\S+%\s+\((\d[\d,]*)\)$", line.strip())
        assert found, line
        out[found.group(1)] = int(found.group(2).replace(",", ""))
    return out


def isolate_model_registry(client: SERBot, folder: Path) -> None:
    """Give the admin cog (model registry) a throw-away folder, so the bot serves the configured model."""
    try:
        from bot.cogs.admin.settings import LifecycleSettings
    except ImportError:  # no admin cog
        return
    client.lifecycle_settings = LifecycleSettings(_env_file=None, ser_registry_dir=folder)  # type: ignore[attr-defined]


def closed_port() -> int:
    """A loopback TCP port nobody listens on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ------------------------------------------------------------------ fixtures


@pytest.fixture(scope="module")
def expected(predictor: Any, angry_note: bytes) -> Any:
    """What the engine says about :func:`angry_note`."""
    return predictor.predict(angry_note)


@pytest_asyncio.fixture(scope="module", loop_scope="module", params=["sqlite", "postgresql"])
async def database_url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, pg_admin: Any) -> Any:
    """An empty database for the module's bot: an SQLite file, or a new PostgreSQL database."""
    if request.param == "sqlite":
        yield sqlite_url(tmp_path_factory.mktemp("moderation-db") / "ser.db")
        return
    admin = require_pg(pg_admin)
    name = f"ser_test_bot_{secrets.token_hex(6)}"
    conn = await asyncpg.connect(**admin, timeout=5)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    try:
        yield URL.create(
            "postgresql+asyncpg", username=admin["user"], password=admin["password"], host=admin["host"],
            port=admin["port"], database=name,
        ).render_as_string(hide_password=False)  # fmt: skip
    finally:
        conn = await asyncpg.connect(**admin, timeout=5)
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await conn.close()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def store(database_url: str) -> Any:
    """The test's own connection to the bot's database (migrated here first, as an existing database would be)."""
    st = await Store.open(database_url)
    try:
        yield st
    finally:
        await st.close()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def world() -> Any:
    async with FakeDiscord(token="MTA5.mod." + secrets.token_urlsafe(24)) as fake:
        modlog = await fake.add_text_channel("mod-log")
        random_channel = await fake.add_text_channel("random")
        yield World(fake, modlog, random_channel)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def seeded(store: Store, world: World) -> dict[str, int]:
    """Rows written before the bot starts: one past the default 30-day retention, one recent."""
    now = datetime.now(UTC)
    common: dict[str, Any] = dict(
        guild_id=int(world.fake.guild_id), channel_id=int(world.general["id"]), label="calm", confidence=0.7,
        probabilities={"calm": 0.7, "sad": 0.3}, model_version="old-model", duration_s=2.0,
    )  # fmt: skip
    old_user, recent_user = 555_000_000_000_000_001, 555_000_000_000_000_002
    old = await store.record_analysis(user_id=old_user, message_id=1001, created_at=now - timedelta(days=31), **common)
    recent = await store.record_analysis(
        user_id=recent_user, message_id=1002, created_at=now - timedelta(days=29), **common
    )
    assert old is not None and recent is not None
    return {"old_user": old_user, "recent_user": recent_user}


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def bot(world: World, seeded: dict[str, int], database_url: str, model_path: Path,
              tmp_path_factory: pytest.TempPathFactory) -> Any:  # fmt: skip
    """The real bot on the module's database, talking to the fake Discord."""
    fake = world.fake
    settings = Settings(
        _env_file=None,
        discord_token=fake.token,
        discord_api_base_url=fake.base_url,
        database_url=database_url,
        data_dir=tmp_path_factory.mktemp("unused-data"),
        ser_model_path=model_path,
        ser_workers=2,
        ser_request_timeout_s=30,
    )
    client = SERBot(settings, guild_ready_timeout=0.2)
    isolate_model_registry(client, tmp_path_factory.mktemp("registry"))
    outcomes = Outcomes()
    client.add_listener(outcomes.on_voice_note_processed, f"on_{VOICE_NOTE_EVENT}")
    client.outcomes = outcomes  # type: ignore[attr-defined]
    runner = asyncio.create_task(client.start(settings.discord_token.get_secret_value()))
    ready = asyncio.create_task(client.wait_until_ready())
    try:
        done, _ = await asyncio.wait({runner, ready}, timeout=90, return_when=asyncio.FIRST_COMPLETED)
        if runner in done:
            runner.result()
        assert ready in done, "the bot did not become ready within 90 s"
        await allow_analysis(client, fake.guild_id)  # consent first: off until a manager turns it on
        yield client
    finally:
        ready.cancel()
        await client.close()
        await asyncio.wait_for(runner, 30)
        restore_defaults()


# --------------------------------------------------------------------- tests
async def test_commands_are_registered_with_their_permissions(world: World, bot: SERBot) -> None:
    fake = world.fake
    insights = fake.command("insights")
    assert int(insights["default_member_permissions"]) == p.MANAGE_MESSAGES and insights["dm_permission"] is False
    settings = fake.command("settings")
    assert int(settings["default_member_permissions"]) == p.MANAGE_GUILD and settings["dm_permission"] is False
    assert {o["name"] for o in settings["options"]} >= {"show", "analysis", "channel", "replies", "alerts", "retention"}
    privacy = fake.command("privacy")
    assert {o["name"] for o in privacy["options"]} == {"optout", "optin", "show", "delete"}
    assert [o["name"] for o in insights["options"]][:2] == ["scope", "window"]


async def test_the_retention_sweep_at_start_deletes_expired_analyses(
    bot: SERBot, store: Store, seeded: dict[str, int]
) -> None:
    for _ in range(100):
        if not await rows(store, user_id=seeded["old_user"]):
            break
        await asyncio.sleep(0.1)
    assert await rows(store, user_id=seeded["old_user"]) == []  # 31 days old, retention 30
    assert len(await rows(store, user_id=seeded["recent_user"])) == 1  # 29 days old: kept


async def test_a_voice_note_is_answered_and_stored_as_one_row_without_audio(
    world: World, bot: SERBot, store: Store, angry_note: bytes, expected: Any, model_path: Path, database_url: str
) -> None:
    fake, carol = world.fake, world.speakers["carol"]
    mark = fake.mark()
    msg, _ = await send_note(fake, angry_note, carol)
    outcome = await bot.outcomes.wait(msg)  # type: ignore[attr-defined]
    assert outcome.status == "answered" and outcome.stored_id is not None

    reply = fake.find_requests("POST", messages_path(world.general), since=mark)
    assert len(reply) == 1 and str(reply[0].json["message_reference"]["message_id"]) == msg["id"]
    (row,) = await rows(store, message_id=int(msg["id"]))
    assert row["id"] == outcome.stored_id
    assert (row["guild_id"], row["channel_id"], row["user_id"]) == (
        int(fake.guild_id), int(world.general["id"]), user_id(carol)
    )
    assert row["label"] == expected.label
    assert row["confidence"] == pytest.approx(expected.confidence, abs=1e-6)
    assert row["probabilities"] == pytest.approx(expected.probabilities, abs=1e-6)
    assert row["duration_s"] == pytest.approx(expected.duration_s, abs=0.05)
    sidecar = json.loads(model_path.with_suffix(".json").read_text())
    # The producing model's version (the prediction's), whatever the bot serves by the time the row is written.
    assert row["model_version"] == outcome.prediction.model_version == f"v1@sha256:{sidecar['sha256']}"
    assert abs(row["created_at"] - datetime.now(UTC)) < timedelta(minutes=1)
    if database_url.startswith("sqlite"):
        db_file = Path(database_url.split("///", 1)[1])
        stored = b"".join(f.read_bytes() for f in db_file.parent.glob(db_file.name + "*"))
        chunks = [angry_note[i : i + 32] for i in range(200, len(angry_note) - 32, 997)]
        assert chunks and not any(chunk in stored for chunk in chunks)  # no piece of the audio is in the database


async def test_insights_embed_matches_the_stored_rows_and_carries_a_png_chart(
    world: World, bot: SERBot, store: Store, angry_note: bytes
) -> None:
    from PIL import Image

    fake = world.fake
    for member in (world.speakers["gina"], world.speakers["gina"], world.speakers["hal"]):
        msg, _ = await send_note(fake, angry_note, member)
        assert (await bot.outcomes.wait(msg)).stored_id is not None  # type: ignore[attr-defined]

    interaction, mark = await slash(fake, "insights", p.option("window", 3, "7d"), invoker=world.moderator)
    callback = await callback_of(fake, interaction, mark)
    assert callback.json["type"] == 5 and callback.json["data"]["flags"] & EPHEMERAL  # deferred, ephemeral
    edit = await fake.wait_for_request("PATCH", webhook_path(fake, interaction, "/messages/@original"), 30, since=mark)
    since = datetime.now(UTC) - timedelta(days=7)
    stored = [r for r in await rows(store, guild_id=int(fake.guild_id)) if r["created_at"] >= since]
    (embed,) = edit.json["embeds"]
    fields = field_values(embed)
    assert int(fields["Notes analysed"].replace(",", "")) == len(stored) >= 4
    assert parse_distribution(fields["Emotions"]) == dict(Counter(r["label"] for r in stored))
    assert embed["image"]["url"] == "attachment://insights.png"
    (upload,) = edit.uploads
    assert upload.filename == "insights.png"
    with Image.open(io.BytesIO(upload.data)) as image:
        assert image.format == "PNG" and image.size == (1000, 500)
        image.load()  # decodes every pixel

    # One member's notes: hal's single note.
    interaction, mark = await slash(
        fake, "insights", p.option("scope", 3, "user"), p.option("user", 6, world.speakers["hal"]["user"]["id"]),
        invoker=world.moderator, resolved=p.resolved_member(world.speakers["hal"]),
    )  # fmt: skip
    edit = await fake.wait_for_request("PATCH", webhook_path(fake, interaction, "/messages/@original"), 30, since=mark)
    hal_rows = await rows(store, user_id=user_id(world.speakers["hal"]))
    fields = field_values(edit.json["embeds"][0])
    assert fields["Scope"] == f"<@{user_id(world.speakers['hal'])}>"
    assert parse_distribution(fields["Emotions"]) == dict(Counter(r["label"] for r in hal_rows))
    assert len(hal_rows) == 1


async def test_insights_are_refused_to_members_without_moderator_permissions(world: World, bot: SERBot) -> None:
    fake = world.fake
    interaction, mark = await slash(fake, "insights", invoker=world.bystander)
    data = await ephemeral_answer(fake, interaction, mark)
    assert "Manage Messages" in data["content"] and "Manage Server" in data["content"]
    assert not data.get("embeds") and "Traceback" not in data["content"]
    assert not fake.find_requests("PATCH", webhook_path(fake, interaction, "/messages/@original"), since=mark)

    # Manage Server alone is enough for /insights; Manage Messages alone is not enough for /settings.
    interaction, mark = await slash(fake, "insights", invoker=world.manager)
    assert (await callback_of(fake, interaction, mark)).json["type"] == 5
    await fake.wait_for_request("PATCH", webhook_path(fake, interaction, "/messages/@original"), 30, since=mark)
    interaction, mark = await slash(fake, "settings", p.subcommand("show"), invoker=world.moderator)
    assert "Manage Server" in (await ephemeral_answer(fake, interaction, mark))["content"]


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def overwritten(world: World, bot: SERBot) -> dict[str, dict[str, Any]]:
    """Members and channels whose overwrites differ from the server-wide permissions (added while the bot runs).

    * ``chanmod``: an ordinary member granted Manage Messages by an overwrite in ``#mods-corner`` only;
    * ``mod``: Manage Messages server-wide, denied by an overwrite in ``#muted``;
    * ``#secret``: hidden from @everyone (so from ``mod``); ``admin`` (Administrator) sees it.
    """
    fake = world.fake
    chanmod = await fake.add_guild_member(fake.guild, "chanmod")
    mod = await fake.add_guild_member(fake.guild, "overwritten-mod", permissions=MODERATOR)
    admin = await fake.add_guild_member(fake.guild, "admin", permissions=p.MEMBER_PERMISSIONS | p.ADMINISTRATOR)
    corner = await fake.add_channel("mods-corner", overwrites=[p.overwrite(chanmod["user"]["id"], 1,
                                                                           allow=p.MANAGE_MESSAGES)])  # fmt: skip
    muted = await fake.add_channel("muted", overwrites=[p.overwrite(mod["user"]["id"], 1, deny=p.MANAGE_MESSAGES)])
    secret = await fake.add_channel("secret", overwrites=[p.overwrite(fake.guild_id, 0, deny=p.VIEW_CHANNEL)])
    return {"chanmod": chanmod, "mod": mod, "admin": admin, "corner": corner, "muted": muted, "secret": secret}


def in_channel(member: dict[str, Any], permissions: int) -> dict[str, Any]:
    """``member`` as an interaction carries it in a channel where Discord resolved ``permissions``."""
    return {**member, "permissions": str(permissions)}


async def test_insights_use_server_wide_permissions_and_leave_out_channels_the_member_cannot_view(
    world: World, bot: SERBot, store: Store, overwritten: dict[str, dict[str, Any]]
) -> None:
    fake, o = world.fake, overwritten
    guild_id = int(fake.guild_id)
    # Manage Messages from one channel's overwrite is not a moderator: refused there.
    mark = fake.mark()
    interaction = await fake.invoke_slash("insights", invoker=in_channel(o["chanmod"], MODERATOR), channel=o["corner"])
    data = await ephemeral_answer(fake, interaction, mark)
    assert "Manage Messages" in data["content"] and not data.get("embeds")

    # Analyses in #secret, which the moderator cannot view, and in #muted, which they can.
    now = datetime.now(UTC)
    for i, (channel, label) in enumerate([(o["secret"], "fearful")] * 3 + [(o["muted"], "calm")] * 2):
        stored = await store.record_analysis(
            guild_id=guild_id, channel_id=int(channel["id"]), user_id=555_000_000_000_000_100 + i,
            message_id=7_000 + i, label=label, confidence=0.9, probabilities={label: 0.9, "sad": 0.1},
            model_version="test", duration_s=2.0, created_at=now - timedelta(minutes=5),
        )  # fmt: skip
        assert stored is not None

    async def notes_seen(invoker: dict[str, Any], channel: dict[str, Any]) -> dict[str, str]:
        mark = fake.mark()
        interaction = await fake.invoke_slash("insights", [p.option("window", 3, "7d")], invoker=invoker,
                                              channel=channel)  # fmt: skip
        assert (await callback_of(fake, interaction, mark)).json["type"] == 5
        edit = await fake.wait_for_request("PATCH", webhook_path(fake, interaction, "/messages/@original"), 30,
                                           since=mark)  # fmt: skip
        return field_values(edit.json["embeds"][0])

    since = datetime.now(UTC) - timedelta(days=7)
    recent = [r for r in await rows(store, guild_id=guild_id) if r["created_at"] >= since]
    visible = [r for r in recent if r["channel_id"] != int(o["secret"]["id"])]
    assert len(visible) >= 2 and len(recent) == len(visible) + 3
    # The moderator's Manage Messages is denied in #muted, yet they moderate the server: allowed, #secret left out.
    fields = await notes_seen(in_channel(o["mod"], p.MEMBER_PERMISSIONS), o["muted"])
    assert int(fields["Notes analysed"].replace(",", "")) == len(visible)
    assert parse_distribution(fields["Emotions"]) == dict(Counter(r["label"] for r in visible))
    assert all(f"<#{o['secret']['id']}>" not in value for value in fields.values())
    # An Administrator sees every channel.
    fields = await notes_seen(in_channel(o["admin"], p.MEMBER_PERMISSIONS | p.ADMINISTRATOR), world.general)
    assert int(fields["Notes analysed"].replace(",", "")) == len(recent)

    # Asking for the hidden channel itself is refused, and nothing is shown.
    resolved = {"channels": {o["secret"]["id"]: p.resolved_channel(o["secret"], MODERATOR)}}
    interaction, mark = await slash(fake, "insights", p.option("channel", 7, o["secret"]["id"]),
                                    invoker=o["mod"], resolved=resolved)  # fmt: skip
    data = await ephemeral_answer(fake, interaction, mark)
    assert data["content"] == CANNOT_VIEW
    assert not fake.find_requests("PATCH", webhook_path(fake, interaction, "/messages/@original"), since=mark)


async def test_settings_channel_takes_text_voice_forum_channels_and_categories_only(
    world: World, bot: SERBot, store: Store
) -> None:
    fake, guild_id = world.fake, int(world.fake.guild_id)
    category = await fake.add_channel("Voice notes", type=4)
    text = await fake.add_channel("talk", type=0, parent_id=category["id"])
    voice = await fake.add_channel("hangout", type=2, parent_id=category["id"])
    forum = await fake.add_channel("questions", type=15, parent_id=category["id"])
    stage = await fake.add_channel("town-hall", type=13, parent_id=category["id"])
    thread = {"id": p.snowflake(), "type": 11, "name": "a thread", "parent_id": text["id"],
              "permissions": str(MANAGER), "owner_id": world.manager["user"]["id"], "member_count": 1,
              "message_count": 1, "thread_metadata": {"archived": False, "auto_archive_duration": 1440,
                                                       "archive_timestamp": datetime.now(UTC).isoformat(),
                                                       "locked": False}}  # fmt: skip

    async def channel_mode(target: dict[str, Any], mode: str) -> dict[str, Any]:
        resolved_target = target if "thread_metadata" in target else p.resolved_channel(target, MANAGER)
        options = [p.option("channel", 7, target["id"]), p.option("mode", 3, mode)]
        interaction, mark = await slash(fake, "settings", p.subcommand("channel", options), invoker=world.manager,
                                        resolved={"channels": {target["id"]: resolved_target}})  # fmt: skip
        return await ephemeral_answer(fake, interaction, mark)

    option = next(o for o in fake.command("settings")["options"] if o["name"] == "channel")
    picker = next(o for o in option["options"] if o["name"] == "channel")
    assert sorted(picker["channel_types"]) == [0, 2, 4, 5, 15]  # what the client offers

    before = await store.get_guild_settings(guild_id)
    for refused, kind in ((stage, "a stage channel"), (thread, "a thread")):
        data = await channel_mode(refused, "deny")
        assert data["content"].startswith("Pick a text, voice or forum channel") and kind in data["content"]
    assert await store.get_guild_settings(guild_id) == before

    for accepted in (voice, forum):
        data = await channel_mode(accepted, "deny")
        assert f"<#{accepted['id']}>" in data["embeds"][0]["description"]
        assert int(accepted["id"]) in (await store.get_guild_settings(guild_id)).denied_channels
    # A category stands for its text, voice and forum channels (not the stage, not itself).
    await channel_mode(category, "deny")
    members = {int(c["id"]) for c in (text, voice, forum)}
    assert (await store.get_guild_settings(guild_id)).denied_channels - before.denied_channels == members
    await channel_mode(category, "clear")
    assert (await store.get_guild_settings(guild_id)).denied_channels == before.denied_channels


async def test_an_alert_is_posted_once_per_cool_down_in_the_mod_log_channel(
    world: World, bot: SERBot, store: Store, angry_note: bytes, expected: Any
) -> None:
    fake, dave = world.fake, world.speakers["dave"]
    interaction, mark = await slash(
        fake, "settings",
        p.subcommand("alerts", [p.option("channel", 7, world.modlog["id"]), p.option("emotions", 3, expected.label),
                                p.option("threshold", 10, 0.0), p.option("cooldown", 4, 10)]),
        invoker=world.manager, resolved={"channels": {world.modlog["id"]: p.resolved_channel(world.modlog, MANAGER)}},
    )  # fmt: skip
    answer = await ephemeral_answer(fake, interaction, mark)
    assert f"<#{world.modlog['id']}>" in field_values(answer["embeds"][0])["Alerts"]

    mark = fake.mark()
    sent = [await send_note(fake, angry_note, dave) for _ in range(3)]  # all inside one cool-down
    outcomes = [await bot.outcomes.wait(msg) for msg, _ in sent]  # type: ignore[attr-defined]
    assert all(o.status == "answered" and o.stored_id is not None for o in outcomes)
    assert [o.prediction.label for o in outcomes] == [expected.label] * 3  # type: ignore[union-attr]
    alerts = fake.find_requests("POST", messages_path(world.modlog), since=mark)
    assert len(alerts) == 1 and sum(o.alerted for o in outcomes) == 1
    alerted = next(msg for (msg, _), o in zip(sent, outcomes) if o.alerted)
    (embed,) = alerts[0].json["embeds"]
    fields = field_values(embed)
    assert fields["Emotion"] == expected.label
    assert fields["Confidence"] == f"{expected.confidence:.1%}"
    assert f"<@{user_id(dave)}>" in fields["Author"]
    assert fields["Channel"] == f"<#{world.general['id']}>"
    jump = f"https://discord.com/channels/{fake.guild_id}/{world.general['id']}/{alerted['id']}"
    assert f"]({jump})" in fields["Message"]
    assert len(await rows(store, user_id=user_id(dave))) == 3  # every note is stored, only one alerts

    # The cool-down is per member and channel: the same member in another channel alerts again.
    mark = fake.mark()
    msg, _ = await send_note(fake, angry_note, dave, channel=world.random)
    assert (await bot.outcomes.wait(msg)).alerted  # type: ignore[attr-defined]
    (other,) = fake.find_requests("POST", messages_path(world.modlog), since=mark)
    assert field_values(other.json["embeds"][0])["Channel"] == f"<#{world.random['id']}>"

    interaction, mark = await slash(fake, "settings", p.subcommand("alerts-off"), invoker=world.manager)
    assert "off" in (await ephemeral_answer(fake, interaction, mark))["embeds"][0]["description"]


async def test_an_opted_out_member_is_neither_answered_nor_stored(
    world: World, bot: SERBot, store: Store, angry_note: bytes
) -> None:
    fake, erin = world.fake, world.speakers["erin"]
    interaction, mark = await slash(fake, "privacy", p.subcommand("optout"), invoker=erin)
    assert "opted out" in (await ephemeral_answer(fake, interaction, mark))["content"]

    mark = fake.mark()
    msg, note = await send_note(fake, angry_note, erin)
    outcome = await bot.outcomes.wait(msg)  # type: ignore[attr-defined]
    assert (outcome.status, outcome.reason, outcome.stored_id) == ("skipped", "opted_out", None)
    assert not fake.find_requests("POST", r"^/channels/\d+/messages$", since=mark)  # no answer anywhere
    assert not fake.downloads_of(note)  # not even downloaded
    assert await rows(store, user_id=user_id(erin)) == []

    # Nobody else can have their note analysed with the message command either.
    interaction = await fake.invoke_message_command("Detect emotion", msg)
    data = await ephemeral_answer(fake, interaction, mark)
    assert "opted out" in data["content"] and not fake.downloads_of(note)

    interaction, mark = await slash(fake, "privacy", p.subcommand("optin"), invoker=erin)
    assert "opted in" in (await ephemeral_answer(fake, interaction, mark))["content"]
    msg, _ = await send_note(fake, angry_note, erin)
    assert (await bot.outcomes.wait(msg)).stored_id is not None  # type: ignore[attr-defined]
    assert len(await rows(store, user_id=user_id(erin))) == 1


async def test_privacy_delete_needs_the_members_own_confirmation_and_leaves_no_rows(
    world: World, bot: SERBot, store: Store, angry_note: bytes
) -> None:
    fake, frank = world.fake, world.speakers["frank"]
    for _ in range(2):
        msg, _ = await send_note(fake, angry_note, frank)
        assert (await bot.outcomes.wait(msg)).stored_id is not None  # type: ignore[attr-defined]

    interaction, mark = await slash(fake, "privacy", p.subcommand("show"), invoker=frank)
    shown = field_values((await ephemeral_answer(fake, interaction, mark))["embeds"][0])
    assert shown["Stored analyses"].startswith("**2**")

    interaction, mark = await slash(fake, "privacy", p.subcommand("delete"), invoker=frank)
    question = await ephemeral_answer(fake, interaction, mark)
    assert "Delete all" in question["content"]
    buttons = {c["label"]: c["custom_id"] for row in question["components"] for c in row["components"]}
    prompt = fake.original_message(interaction)
    assert prompt is not None and set(buttons) == {"Delete my data", "Keep it"}

    # Someone else pressing the button is turned away and nothing is deleted.
    mark = fake.mark()
    click = await fake.invoke_component(prompt, buttons["Delete my data"], invoker=world.bystander)
    refused = await ephemeral_answer(fake, click, mark)
    assert "someone else" in refused["content"]
    assert len(await rows(store, user_id=user_id(frank))) == 2

    mark = fake.mark()
    click = await fake.invoke_component(prompt, buttons["Delete my data"], invoker=frank)
    callback = await callback_of(fake, click, mark)
    assert callback.json["type"] == 7  # the prompt is updated in place
    assert "Deleted" in callback.json["data"]["content"] and callback.json["data"]["components"] == []
    assert await rows(store, user_id=user_id(frank)) == []
    summary = await store.user_summary(user_id(frank))
    assert summary.total_rows == 0 and not summary.opted_out


async def test_dm_answers_and_denied_channels_follow_the_server_settings(
    world: World, bot: SERBot, store: Store, angry_note: bytes
) -> None:
    fake, gina = world.fake, world.speakers["gina"]
    before = len(await rows(store, user_id=user_id(gina)))
    interaction, mark = await slash(fake, "settings", p.subcommand("replies", [p.option("mode", 3, "dm")]),
                                    invoker=world.manager)  # fmt: skip
    await ephemeral_answer(fake, interaction, mark)
    mark = fake.mark()
    msg, _ = await send_note(fake, angry_note, gina)
    assert (await bot.outcomes.wait(msg)).status == "answered"  # type: ignore[attr-defined]
    dm = fake.dm_channel_of(gina["user"]["id"])
    assert dm is not None
    (answer,) = fake.find_requests("POST", messages_path(dm), since=mark)
    assert answer.json["embeds"] and msg["id"] in answer.json["content"]  # the jump link to the note
    assert not fake.find_requests("POST", messages_path(world.general), since=mark)
    assert len(await rows(store, user_id=user_id(gina))) == before + 1

    resolved = {"channels": {world.random["id"]: p.resolved_channel(world.random, MANAGER)}}
    for sub, options in (
        ("replies", [p.option("mode", 3, "reply")]),
        ("channel", [p.option("channel", 7, world.random["id"]), p.option("mode", 3, "deny")]),
    ):
        interaction, mark = await slash(fake, "settings", p.subcommand(sub, options), invoker=world.manager,
                                        resolved=resolved)  # fmt: skip
        await ephemeral_answer(fake, interaction, mark)
    mark = fake.mark()
    msg, note = await send_note(fake, angry_note, gina, channel=world.random)
    outcome = await bot.outcomes.wait(msg)  # type: ignore[attr-defined]
    assert (outcome.status, outcome.reason) == ("skipped", "channel_off")
    assert not fake.downloads_of(note) and not fake.find_requests("POST", r"^/channels/\d+/messages$", since=mark)
    assert len(await rows(store, user_id=user_id(gina))) == before + 1
    clear = p.subcommand("channel", [p.option("channel", 7, world.random["id"]), p.option("mode", 3, "clear")])
    interaction, mark = await slash(fake, "settings", clear, invoker=world.manager, resolved=resolved)
    await ephemeral_answer(fake, interaction, mark)


async def test_leaving_a_server_deletes_its_stored_data(world: World, bot: SERBot, store: Store) -> None:
    """Runs last for each bot: afterwards the bot no longer sees the guild."""
    fake, guild_id = world.fake, int(world.fake.guild_id)
    interaction, mark = await slash(fake, "settings", p.subcommand("retention", [p.option("days", 4, 7)]),
                                    invoker=world.manager)  # fmt: skip
    assert "7 days" in (await ephemeral_answer(fake, interaction, mark))["embeds"][0]["description"]
    assert (await store.get_guild_settings(guild_id)).retention_days == 7
    assert await rows(store, guild_id=guild_id)  # the earlier tests stored notes here

    await fake.dispatch("GUILD_DELETE", {"id": fake.guild_id})  # the bot was removed from the server
    for _ in range(100):
        if not await rows(store, guild_id=guild_id):
            break
        await asyncio.sleep(0.1)
    assert await rows(store, guild_id=guild_id) == []
    assert (await store.get_guild_settings(guild_id)).retention_days == 30  # no settings row left: defaults


# ------------------------------------------------ the database is unreachable
async def test_with_an_unreachable_database_notes_are_not_answered_in_public_and_insights_say_so(
    tmp_path: Path, model_path: Path, angry_note: bytes
) -> None:
    """``python -m bot`` with DATABASE_URL on a closed port: starts, fails closed, explains, stops cleanly.

    No opt-out list and no server settings were ever read, so a voice note
    is neither answered nor downloaded (issue 13, point 5; see
    ``tests/test_storage_unavailable.py`` for the recovery).
    """
    async with FakeDiscord(token="MTA5.down." + secrets.token_urlsafe(24)) as fake:
        moderator = fake.add_member("mod", permissions=MODERATOR)
        env = {k: v for k, v in os.environ.items() if k.lower() not in Settings.model_fields}
        env.update(
            PYTHONPATH=str(ROOT), DISCORD_TOKEN=fake.token, DISCORD_API_BASE_URL=fake.base_url,
            DATABASE_URL=f"postgresql://ser:secret-pw@127.0.0.1:{closed_port()}/ser", SER_MODEL_PATH=str(model_path),
            SER_WORKERS="1", LOG_LEVEL="INFO", SER_REGISTRY_DIR=str(tmp_path / "registry"),
        )  # fmt: skip
        log_path = tmp_path / "bot.log"
        with open(log_path, "wb") as log:
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "bot", cwd=tmp_path, env=env, stdin=asyncio.subprocess.DEVNULL,
                stdout=log, stderr=log,
            )  # fmt: skip
            try:
                await fake.wait_until_connected(timeout=90)
                mark = fake.mark()
                msg, note = await send_note(fake, angry_note, fake.human_member)
                for _ in range(300):
                    if f"voice message {msg['id']} not analysed" in log_path.read_text():
                        break
                    await asyncio.sleep(0.1)
                assert f"voice message {msg['id']} not analysed" in log_path.read_text()
                assert not fake.find_requests("POST", messages_path(fake.channel), since=mark)
                assert not fake.downloads_of(note)

                for name, options in (("insights", []), ("privacy", [p.subcommand("show")])):
                    interaction, mark = await slash(fake, name, *options, invoker=moderator)
                    callback = await callback_of(fake, interaction, mark)
                    if callback.json["type"] == 5:  # /insights defers, then replaces the answer by a followup
                        answer = await fake.wait_for_request("POST", webhook_path(fake, interaction), 20, since=mark)
                        text, flags = answer.json["content"], answer.json["flags"]
                    else:
                        text, flags = callback.json["data"]["content"], callback.json["data"]["flags"]
                    assert text == StoreUnavailableError("x").user_message and flags & EPHEMERAL
            finally:
                if proc.returncode is None:
                    proc.send_signal(signal.SIGTERM)
                code = await asyncio.wait_for(proc.wait(), 30)
    output = log_path.read_text()
    assert code == 0, output[-3000:]
    assert "Traceback" not in output and "secret-pw" not in output and fake.token not in output
    assert "database is unavailable" in output
    # DATABASE_URL given: no SQLite file on the side (DATA_DIR itself is checked writable at start: it holds the
    # feature cache)
    assert not list((tmp_path / "data").glob("*.db"))


# ------------------------------------- servers left while the bot was offline
async def test_the_sweep_after_ready_deletes_the_data_of_servers_the_bot_is_no_longer_in(
    tmp_path: Path, model_path: Path
) -> None:
    """Issue 13 (8): rows of a server that READY does not list go; rows of present servers and DMs stay."""
    url = sqlite_url(tmp_path / "ser.db")
    now = datetime.now(UTC)
    async with FakeDiscord(token="MTA5.gone." + secrets.token_urlsafe(24)) as fake:
        present, departed = int(fake.guild_id), int(p.snowflake())  # the fake lists only its own guild in READY
        common: dict[str, Any] = dict(
            channel_id=int(fake.channel["id"]), label="calm", confidence=0.7, probabilities={"calm": 0.7},
            model_version="m", duration_s=2.0, created_at=now - timedelta(days=1),
        )  # fmt: skip
        async with Store(url) as st:  # written while the bot was offline
            for i, guild in enumerate((present, departed, departed, None)):
                await st.record_analysis(guild_id=guild, user_id=777_000 + i, message_id=9_000 + i, **common)
            for guild in (present, departed):
                configured = await st.update_guild_settings(
                    guild, retention_days=7, modlog_channel_id=1, alert_emotions=["calm"], alert_threshold=0.5
                )
                assert await st.should_alert(guild, 1, 2, "calm", 0.9, now=now, settings=configured)  # an alert_log row
        settings = Settings(
            _env_file=None, discord_token=fake.token, discord_api_base_url=fake.base_url, database_url=url,
            data_dir=tmp_path / "data", ser_model_path=model_path, ser_workers=1,
        )  # fmt: skip
        client = SERBot(settings, guild_ready_timeout=0.2)
        isolate_model_registry(client, tmp_path / "registry")
        runner = asyncio.create_task(client.start(settings.discord_token.get_secret_value()))
        try:
            async with Store(url) as st:
                await asyncio.wait_for(client.wait_until_ready(), 90)
                assert [g.id for g in client.guilds] == [present]
                for _ in range(100):
                    if not await rows(st, guild_id=departed):
                        break
                    await asyncio.sleep(0.1)
                assert await rows(st, guild_id=departed) == []
                assert (await st.get_guild_settings(departed)).retention_days == 30  # its settings row is gone
                assert len(await rows(st, guild_id=present)) == 1  # the server the bot is in keeps its data
                assert (await st.get_guild_settings(present)).retention_days == 7
                async with st.engine.connect() as conn:  # the direct message's analysis is no server's data
                    dm_rows = (await conn.execute(select(Analysis.id).where(Analysis.guild_id.is_(None)))).all()
                    alert_guilds = (await conn.execute(select(AlertLog.guild_id))).scalars().all()
                assert len(dm_rows) == 1
                assert alert_guilds == [present]
        finally:
            await client.close()
            await asyncio.wait_for(runner, 30)
            restore_defaults()
