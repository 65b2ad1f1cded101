"""Consent first and honest answers (issue 14, points 2 and 3), over the fake Discord.

The real SERBot runs against the fake Discord on loopback with the shipped
model; nothing here turns analysis on behind the bot's back: the server
starts as a new server would, with automatic analysis off, and a member with
Manage Server turns it on with ``/settings analysis``.
"""

from __future__ import annotations

import asyncio
import io
import re
import secrets
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from bot.client import SERBot
from bot.cogs.emotion.cog import OPTED_OUT_DM
from bot.cogs.help.text import JOIN_MESSAGE
from bot.config import Settings
from bot.discord_api import restore_defaults
from bot.palette import EMOTION_COLOURS, OKABE_ITO, colour_int
from tests.conftest import voice_note
from tests.fake_discord import FakeDiscord
from tests.fake_discord import payloads as p
from tests.test_bot_e2e import EPHEMERAL, VOICE_MESSAGE, Outcomes, callback_of, webhook_path

pytestmark = pytest.mark.asyncio(loop_scope="module")

MANAGER = p.MEMBER_PERMISSIONS | p.MANAGE_GUILD


class World:
    """The fake Discord with an ordinary member and a server manager (added before the bot connects)."""

    def __init__(self, fake: FakeDiscord) -> None:
        self.fake = fake
        self.member = fake.add_member("bob")
        self.manager = fake.add_member("manager", permissions=MANAGER)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def world() -> Any:
    async with FakeDiscord(token="MTA5.consent." + secrets.token_urlsafe(24)) as fake:
        yield World(fake)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def bot(world: World, model_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Any:
    """The bot as a new server gets it: default settings, nothing enabled."""
    fake = world.fake
    settings = Settings(
        _env_file=None, discord_token=fake.token, discord_api_base_url=fake.base_url,
        data_dir=tmp_path_factory.mktemp("consent-data"), ser_model_path=model_path, ser_workers=1,
        ser_privacy_url="https://example.org/ser-privacy",
    )  # fmt: skip
    client = SERBot(settings, guild_ready_timeout=0.2)
    from bot.cogs.admin.settings import LifecycleSettings

    client.lifecycle_settings = LifecycleSettings(_env_file=None, ser_registry_dir=tmp_path_factory.mktemp("reg"))
    runner = asyncio.create_task(client.start(settings.discord_token.get_secret_value()))
    ready = asyncio.create_task(client.wait_until_ready())
    try:
        done, _ = await asyncio.wait({runner, ready}, timeout=90, return_when=asyncio.FIRST_COMPLETED)
        if runner in done:
            runner.result()
        assert ready in done, "the bot did not become ready within 90 s"
        yield client
    finally:
        ready.cancel()
        await client.close()
        await asyncio.wait_for(runner, 30)
        restore_defaults()


async def post_note(fake: FakeDiscord, bot: SERBot, audio: bytes, *, dm: bool = False) -> tuple[dict, Any]:
    """Post ``audio`` as a voice note; return (message, the bot's outcome)."""
    note = fake.add_attachment(audio, "voice-message.ogg", "audio/ogg", voice_message=True, duration_s=4.0)
    with Outcomes(bot) as outcomes:
        msg = await fake.send_message(attachments=[note], flags=VOICE_MESSAGE, dm=dm)
        return msg, await outcomes.of(msg)


def channel_posts(channel: dict[str, Any]) -> str:
    return rf"^/channels/{channel['id']}/messages$"


async def ephemeral_answer(fake: FakeDiscord, interaction: dict[str, Any], mark: int) -> dict[str, Any]:
    callback = await callback_of(fake, interaction, mark)
    assert callback.json["type"] == 4, callback.json
    data = callback.json["data"]
    assert data["flags"] & EPHEMERAL, data
    return data


async def run_help(fake: FakeDiscord, invoker: dict[str, Any]) -> str:
    mark = fake.mark()
    interaction = await fake.invoke_slash("help", invoker=invoker)
    data = await ephemeral_answer(fake, interaction, mark)
    (embed,) = data["embeds"]
    return embed["description"] + "\n" + "\n".join(f"{f['name']}: {f['value']}" for f in embed["fields"])


# ------------------------------------------------------------------ point 2: consent first
async def test_a_new_server_is_not_analysed_until_a_manager_turns_analysis_on(
    world: World, bot: SERBot, angry_note: bytes
) -> None:
    fake = world.fake
    mark = fake.mark()
    msg, outcome = await post_note(fake, bot, angry_note)
    assert (outcome.status, outcome.reason) == ("skipped", "channel_off")
    assert not fake.find_requests("POST", channel_posts(fake.channel), since=mark)  # no answer
    assert not fake.find_requests("GET", r"^/attachments/", since=mark)  # not even downloaded

    on = p.subcommand("analysis", [p.option("enabled", 5, True)])
    mark = fake.mark()
    refused = await fake.invoke_slash("settings", [on], invoker=world.member)  # no Manage Server
    data = await ephemeral_answer(fake, refused, mark)
    assert "Manage Server" in data["content"]
    _msg, outcome = await post_note(fake, bot, angry_note)
    assert outcome.status == "skipped"  # the refusal changed nothing

    mark = fake.mark()
    enabled = await fake.invoke_slash("settings", [on], invoker=world.manager)
    data = await ephemeral_answer(fake, enabled, mark)
    assert "now **on**" in data["embeds"][0]["description"]
    mark = fake.mark()
    msg, outcome = await post_note(fake, bot, angry_note)
    assert outcome.status == "answered" and outcome.stored_id is not None
    reply = await fake.wait_for_request("POST", channel_posts(fake.channel), timeout=30, since=mark)
    assert str(reply.json["message_reference"]["message_id"]) == msg["id"]
    assert "/privacy optout" in reply.json["embeds"][0]["footer"]["text"]  # every answer names the opt-out


async def test_direct_messages_are_always_answered_even_after_an_opt_out(
    world: World, bot: SERBot, angry_note: bytes
) -> None:
    fake = world.fake
    dm_posts = channel_posts(fake.dm_channel)
    mark = fake.mark()
    msg, outcome = await post_note(fake, bot, angry_note, dm=True)
    assert outcome.status == "answered" and outcome.stored_id is None  # answered, never stored
    reply = await fake.wait_for_request("POST", dm_posts, timeout=30, since=mark)
    assert "/privacy optout" in reply.json["embeds"][0]["footer"]["text"]

    mark = fake.mark()
    await ephemeral_answer(fake, await fake.invoke_slash("privacy", [p.subcommand("optout")]), mark)
    try:
        mark = fake.mark()
        msg, outcome = await post_note(fake, bot, angry_note, dm=True)
        assert (outcome.status, outcome.reason) == ("refused", "opted_out")
        reply = await fake.wait_for_request("POST", dm_posts, timeout=30, since=mark)
        assert reply.json["content"] == OPTED_OUT_DM and not reply.json.get("embeds")
        assert not fake.find_requests("GET", r"^/attachments/", since=mark)  # not analysed
    finally:
        mark = fake.mark()
        await ephemeral_answer(fake, await fake.invoke_slash("privacy", [p.subcommand("optin")]), mark)


async def test_joining_a_server_posts_one_greeting_in_its_system_channel_only_where_allowed(
    world: World, bot: SERBot
) -> None:
    fake = world.fake
    joined: list[int] = []

    async def on_guild_join(guild: Any) -> None:
        joined.append(guild.id)

    bot.add_listener(on_guild_join)
    try:
        mark = fake.mark()
        greeted = await fake.add_guild("Greets", system_channel=True)
        silent = await fake.add_guild("No system channel")
        muted = await fake.add_guild("Muted", system_channel=True, overwrites=[
            p.overwrite(fake.bot_user["id"], 1, deny=p.SEND_MESSAGES)])  # fmt: skip
        for _ in range(200):  # the bot handled all three joins
            if len(joined) == 3:
                break
            await asyncio.sleep(0.05)
        assert sorted(joined) == sorted(int(g["id"]) for g in (greeted, silent, muted))
        await asyncio.sleep(0.3)  # a second greeting would be sent right after the first
        (post,) = fake.find_requests("POST", channel_posts(greeted["channels"][0]), since=mark)
        assert post.json["content"] == JOIN_MESSAGE
        for needed in ("off", "/settings", "/privacy"):
            assert needed in post.json["content"]
        for guild in (silent, muted):
            assert not fake.find_requests("POST", channel_posts(guild["channels"][0]), since=mark)
        assert len(fake.find_requests("POST", r"^/channels/\d+/messages$", since=mark)) == 1
    finally:
        bot.remove_listener(on_guild_join)


async def test_help_lists_only_the_commands_the_caller_may_use_and_links_the_privacy_text(
    world: World, bot: SERBot, caplog: pytest.LogCaptureFixture
) -> None:
    fake = world.fake
    member_help = await run_help(fake, world.member)
    manager_help = await run_help(fake, world.manager)
    owner_help = await run_help(fake, fake.human_member)  # the application's owner in the fake
    for text in (member_help, manager_help, owner_help):
        for everyone in ("`/emotion`", "`/help`", "`/privacy optout`", "`/privacy delete`", "Detect emotion"):
            assert everyone in text
        assert "https://example.org/ser-privacy" in text
    for hidden in ("/settings", "/insights", "/retrain", "/model activate"):
        assert hidden not in member_help
    assert "`/settings analysis`" in manager_help and "`/retrain`" not in manager_help
    assert "`/retrain`" in owner_help and "`/model activate`" in owner_help  # operators may
    assert not [r for r in caplog.records if "refused an operator command" in r.getMessage()]  # asking is no attempt


# ------------------------------------------------------------------ point 3: honest answers
@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def unsure_note(ravdess_dir: Path, ffmpeg: str, predictor: Any, tmp_path_factory: pytest.TempPathFactory) -> Any:
    """A real RAVDESS clip, as a voice note, that the model is unsure about (found by the engine, not listed)."""
    out = tmp_path_factory.mktemp("unsure")
    for clip in sorted((ravdess_dir / "Actor_02").glob("*.flac"))[:40]:
        data = (await asyncio.to_thread(voice_note, ffmpeg, clip, out / (clip.stem + ".ogg"))).read_bytes()
        expected = await asyncio.to_thread(predictor.predict, data)
        if expected.unsure:
            return data, expected
    pytest.fail("no unsure clip among the first 40 of Actor_02")


async def test_an_unsure_answer_says_so_and_shows_the_top_two(world: World, bot: SERBot, unsure_note: Any) -> None:
    fake = world.fake
    data, expected = unsure_note
    assert expected.confidence < bot.service.predictor.unsure_below
    mark = fake.mark()
    msg, outcome = await post_note(fake, bot, data, dm=True)
    assert outcome.status == "answered"
    reply = await fake.wait_for_request("POST", channel_posts(fake.dm_channel), timeout=30, since=mark)
    (embed,) = reply.json["embeds"]
    first, second = sorted(expected.probabilities.items(), key=lambda kv: -kv[1])[:2]
    assert "Detected emotion" not in embed["description"] and "not sure" in embed["description"]
    assert "Unsure" in embed["title"]
    shown = re.findall(r"\*\*(\w+)\*\* \((\d+\.\d)%\)", embed["description"])
    assert [label for label, _ in shown] == [first[0], second[0]]
    for (_, pct), (_, prob) in zip(shown, (first, second), strict=True):
        assert float(pct) / 100 == pytest.approx(prob, abs=0.0006)
    assert f"{bot.service.predictor.unsure_below:.0%}" in embed["description"]
    assert embed["color"] == colour_int(expected.label)


async def test_a_confident_answer_keeps_detected_emotion_in_its_okabe_ito_colour(
    world: World, bot: SERBot, angry_note: bytes, predictor: Any
) -> None:
    fake = world.fake
    expected = await asyncio.to_thread(predictor.predict, angry_note)
    assert not expected.unsure
    mark = fake.mark()
    await post_note(fake, bot, angry_note, dm=True)
    reply = await fake.wait_for_request("POST", channel_posts(fake.dm_channel), timeout=30, since=mark)
    (embed,) = reply.json["embeds"]
    assert embed["description"] == f"Detected emotion: **{expected.label}**"
    assert f"#{embed['color']:06X}" == EMOTION_COLOURS[expected.label]
    assert EMOTION_COLOURS[expected.label] in OKABE_ITO.values()


async def test_the_insights_chart_has_a_text_alternative_and_palette_colours(world: World, bot: SERBot) -> None:
    from PIL import Image

    fake = world.fake
    # The first test stored the manager-enabled note (angry). The manager may see insights.
    mark = fake.mark()
    interaction = await fake.invoke_slash("insights", [p.option("scope", 3, "server")], invoker=world.manager)
    edit = await fake.wait_for_request("PATCH", webhook_path(fake, interaction, "/messages/@original"), 30, since=mark)
    (attachment,) = edit.json["attachments"]
    description = attachment["description"]
    assert attachment["filename"] == "insights.png"
    assert description.startswith("Stacked bar chart") and 0 < len(description) <= 1024
    total = int(re.search(r"\((\d+) notes?\)", description).group(1))
    assert total >= 1
    for label, pct, n in re.findall(r"(\w+) (\d+)% \((\d+)\)", description):
        assert int(n) <= total and int(pct) == round(100 * int(n) / total)
    (upload,) = edit.uploads
    colours = Image.open(io.BytesIO(upload.data)).convert("RGB").getcolors(maxcolors=1 << 20)
    first = re.search(r"(\w+) \d+% \(", description).group(1)
    assert EMOTION_COLOURS[first] in {"#%02X%02X%02X" % rgb for _n, rgb in colours}
