"""End to end: the real SERBot, the configured model and a fake Discord on loopback.

One bot (and one fake Discord) serves every test of this module; each test
works on fresh messages and interactions and only looks at requests made
after its own ``fake.mark()``.  Expected emotions are computed by the engine
on the very bytes the bot downloads, never hard-coded.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import secrets
import signal
import sys
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from bot.client import INTENTS, SERBot
from bot.config import Settings
from bot.discord_api import restore_defaults
from tests._consent import allow_analysis, allow_analysis_in
from tests.fake_discord import FakeDiscord, RecordedRequest

pytestmark = pytest.mark.asyncio(loop_scope="module")

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(__file__).resolve().parent / "data"
IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}
MAX_BYTES = 2 * 2**20  # the bot's SER_MAX_BYTES in these tests
MAX_DOWNLOADS = 2  # the bot's SER_MAX_DOWNLOADS in these tests
EPHEMERAL = 64
VOICE_MESSAGE = 8192


# ------------------------------------------------------------------ fixtures


class LogCollector(logging.Handler):
    """Keeps every formatted log line the process emits while the bot runs."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def fake() -> Any:
    async with FakeDiscord(token="MTA5.fake." + secrets.token_urlsafe(24)) as server:
        yield server


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def bot(fake: FakeDiscord, model_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Any:
    """The real bot, configured through Settings to talk to the fake Discord (SQLite in a temporary folder)."""
    settings = Settings(
        _env_file=None,
        discord_token=fake.token,
        discord_api_base_url=fake.base_url,
        data_dir=tmp_path_factory.mktemp("bot-data"),
        ser_model_path=model_path,
        ser_max_bytes=MAX_BYTES,
        ser_max_downloads=MAX_DOWNLOADS,
        ser_workers=2,
        ser_request_timeout_s=30,
    )
    logs = LogCollector()
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(logs)
    root.setLevel(logging.DEBUG)
    client = SERBot(settings, guild_ready_timeout=0.2)
    try:  # the admin cog's model registry: a throw-away folder, so the configured model is served
        from bot.cogs.admin.settings import LifecycleSettings

        lifecycle = LifecycleSettings(_env_file=None, ser_registry_dir=tmp_path_factory.mktemp("registry"))
        client.lifecycle_settings = lifecycle  # type: ignore[attr-defined]
    except ImportError:
        pass
    client.test_logs = logs  # type: ignore[attr-defined]
    runner = asyncio.create_task(client.start(settings.discord_token.get_secret_value()))
    ready = asyncio.create_task(client.wait_until_ready())
    try:
        done, _ = await asyncio.wait({runner, ready}, timeout=90, return_when=asyncio.FIRST_COMPLETED)
        if runner in done:
            runner.result()  # start-up failed: raise its error
        assert ready in done, "the bot did not become ready within 90 s"
        await allow_analysis(client, fake.guild_id)  # consent first: off until a manager turns it on
        yield client
    finally:
        ready.cancel()
        await client.close()
        await asyncio.wait_for(runner, 30)
        root.removeHandler(logs)
        root.setLevel(old_level)
        restore_defaults()


# ------------------------------------------------------------------- helpers
def parse_answer(embed: dict[str, Any]) -> tuple[str, float, float]:
    """(label, confidence in [0, 1], analysed seconds) as a user reads them from the embed."""
    label = re.search(r"\*\*(\w+)\*\*", embed["description"])
    fields = {f["name"]: f["value"] for f in embed["fields"]}
    confidence = re.fullmatch(r"(\d+(?:\.\d+)?)%", fields["Confidence"])
    seconds = re.match(r"(\d+(?:\.\d+)?) s", fields["Analysed"])
    assert label and confidence and seconds, embed
    return label.group(1), float(confidence.group(1)) / 100, float(seconds.group(1))


def assert_same_answer(embed: dict[str, Any], expected: Any) -> None:
    label, confidence, seconds = parse_answer(embed)
    assert label == expected.label
    assert expected.label.capitalize() in embed["title"]
    assert 0.0 <= confidence <= 1.0
    assert confidence == pytest.approx(expected.confidence, abs=0.0006)  # shown with 0.1 % resolution
    assert seconds == pytest.approx(expected.duration_s, abs=0.051)
    others = next(f["value"] for f in embed["fields"] if f["name"] == "Other emotions")
    assert set(re.findall(r"^(\w+) ", others.strip("`\n"), flags=re.M)) == set(expected.probabilities) - {label}


def messages_path(fake: FakeDiscord) -> str:
    return rf"^/channels/{fake.channel['id']}/messages$"


def webhook_path(fake: FakeDiscord, interaction: dict[str, Any], suffix: str = "") -> str:
    return rf"^/webhooks/{fake.application_id}/{re.escape(interaction['token'])}{suffix}$"


async def callback_of(fake: FakeDiscord, interaction: dict[str, Any], since: int) -> RecordedRequest:
    path = rf"^/interactions/{interaction['id']}/{re.escape(interaction['token'])}/callback$"
    return await fake.wait_for_request("POST", path, timeout=15, since=since)


async def expect(predictor: Any, audio: bytes) -> Any:
    return await asyncio.to_thread(predictor.predict, audio)


def callback_flags(callback: RecordedRequest) -> int:
    """The message flags of an interaction callback (64: ephemeral)."""
    return int((callback.json.get("data") or {}).get("flags") or 0)


class Outcomes:
    """Collects the bot's ``on_voice_note_processed`` outcomes while in a ``with`` block."""

    def __init__(self, bot: SERBot) -> None:
        self.bot = bot
        self.items: list[Any] = []
        self.arrived = asyncio.Event()

    async def on_voice_note_processed(self, outcome: Any) -> None:
        self.items.append(outcome)
        self.arrived.set()

    def __enter__(self) -> Outcomes:
        self.bot.add_listener(self.on_voice_note_processed)
        return self

    def __exit__(self, *exc: object) -> None:
        self.bot.remove_listener(self.on_voice_note_processed)

    async def of(self, message: dict[str, Any], timeout: float = 60) -> Any:
        """The outcome for ``message`` (waits for it)."""

        async def found() -> Any:
            while True:
                for outcome in self.items:
                    if outcome.message_id == int(message["id"]):
                        return outcome
                self.arrived.clear()
                await self.arrived.wait()

        return await asyncio.wait_for(found(), timeout)


# --------------------------------------------------------------------- tests
async def test_bot_connects_with_its_intents_and_registers_commands(fake: FakeDiscord, bot: SERBot) -> None:
    assert fake.identifies and fake.identifies[-1]["intents"] == INTENTS.value
    assert INTENTS.message_content and INTENTS.guild_messages and INTENTS.dm_messages and INTENTS.guilds
    assert all(r.authorized for r in fake.find_requests("GET", r"^/(users/@me|gateway/bot)$"))
    slash = fake.command("emotion")
    options = [(o["name"], o["type"], bool(o.get("required"))) for o in slash["options"]]
    assert options == [("audio", 11, True), ("public", 5, False)]
    assert fake.command("Detect emotion", type=3)


async def test_voice_message_gets_a_reply_with_the_engines_emotion(
    fake: FakeDiscord, bot: SERBot, predictor: Any, angry_note: bytes
) -> None:
    expected = await expect(predictor, angry_note)
    note = fake.add_attachment(
        angry_note, "voice-message.ogg", "audio/ogg", voice_message=True, duration_s=expected.duration_s
    )
    mark = fake.mark()
    msg = await fake.send_message(attachments=[note], flags=VOICE_MESSAGE)

    reply = await fake.wait_for_request("POST", messages_path(fake), timeout=30, since=mark)
    assert str(reply.json["message_reference"]["message_id"]) == msg["id"]
    assert reply.json["allowed_mentions"]["replied_user"] is False
    assert_same_answer(reply.json["embeds"][0], expected)
    typing = fake.find_requests("POST", rf"^/channels/{fake.channel['id']}/typing$", since=mark)
    assert typing and typing[0].index < reply.index
    assert len(fake.downloads_of(note)) == 1


async def test_voice_message_in_a_dm_is_answered(
    fake: FakeDiscord, bot: SERBot, predictor: Any, angry_note: bytes
) -> None:
    expected = await expect(predictor, angry_note)
    note = fake.add_attachment(angry_note, "voice-message.ogg", "audio/ogg", voice_message=True, duration_s=4.0)
    mark = fake.mark()
    msg = await fake.send_message(attachments=[note], flags=VOICE_MESSAGE, dm=True)
    reply = await fake.wait_for_request("POST", rf"^/channels/{fake.dm_channel['id']}/messages$", 30, since=mark)
    assert str(reply.json["message_reference"]["message_id"]) == msg["id"]
    assert_same_answer(reply.json["embeds"][0], expected)


async def test_messages_without_a_voice_note_and_bot_messages_are_ignored(
    fake: FakeDiscord, bot: SERBot, angry_note: bytes
) -> None:
    mark = fake.mark()
    audio_file = fake.add_attachment(angry_note, "clip.ogg", "audio/ogg")  # plain upload, no voice flag
    await fake.send_message(attachments=[audio_file], content="listen to this")
    other_bot = {**fake.human, "id": "42", "username": "otherbot", "bot": True}
    bot_note = fake.add_attachment(angry_note, "voice-message.ogg", "audio/ogg", voice_message=True, duration_s=4.0)
    await fake.send_message(attachments=[bot_note], flags=VOICE_MESSAGE, author=other_bot)
    # A voice note sent afterwards is answered: the earlier ones were skipped, not queued.
    note = fake.add_attachment(angry_note, "voice-message.ogg", "audio/ogg", voice_message=True, duration_s=4.0)
    msg = await fake.send_message(attachments=[note], flags=VOICE_MESSAGE)
    reply = await fake.wait_for_request("POST", messages_path(fake), timeout=30, since=mark)
    assert str(reply.json["message_reference"]["message_id"]) == msg["id"]
    assert len(fake.find_requests("POST", messages_path(fake), since=mark)) == 1
    assert not fake.downloads_of(audio_file) and not fake.downloads_of(bot_note)


async def test_slash_command_defers_then_edits_the_original_response(
    fake: FakeDiscord, bot: SERBot, predictor: Any, angry_note: bytes
) -> None:
    expected = await expect(predictor, angry_note)
    audio = fake.add_attachment(angry_note, "voice-message.ogg", "audio/ogg")
    mark = fake.mark()
    interaction = await fake.invoke_slash_with_attachment("emotion", "audio", audio)

    callback = await callback_of(fake, interaction, mark)
    assert callback.json["type"] == 5  # DEFERRED_CHANNEL_MESSAGE_WITH_SOURCE
    assert callback_flags(callback) & EPHEMERAL  # private unless public:True
    edit = await fake.wait_for_request("PATCH", webhook_path(fake, interaction, "/messages/@original"), 30, since=mark)
    assert edit.index > callback.index
    assert_same_answer(edit.json["embeds"][0], expected)
    assert fake.original_message(interaction)["flags"] & EPHEMERAL


async def test_slash_command_with_public_true_answers_for_everyone(
    fake: FakeDiscord, bot: SERBot, predictor: Any, angry_note: bytes
) -> None:
    expected = await expect(predictor, angry_note)
    audio = fake.add_attachment(angry_note, "voice-message.ogg", "audio/ogg")
    mark = fake.mark()
    interaction = await fake.invoke_slash(
        "emotion",
        [{"name": "audio", "type": 11, "value": audio["id"]}, {"name": "public", "type": 5, "value": True}],
        {"attachments": {audio["id"]: audio}},
    )
    callback = await callback_of(fake, interaction, mark)
    assert callback.json["type"] == 5 and not callback_flags(callback) & EPHEMERAL
    edit = await fake.wait_for_request("PATCH", webhook_path(fake, interaction, "/messages/@original"), 30, since=mark)
    assert_same_answer(edit.json["embeds"][0], expected)
    assert not fake.original_message(interaction)["flags"] & EPHEMERAL


async def test_context_menu_on_a_message_with_an_audio_file(
    fake: FakeDiscord, bot: SERBot, predictor: Any, voice_note_factory: Any
) -> None:
    sad = voice_note_factory(DATA / "03-01-04-02-01-01-03.flac").read_bytes()
    expected = await expect(predictor, sad)
    mark = fake.mark()
    photo = fake.add_attachment(b"\x89PNG\r\n\x1a\n", "cat.png", "image/png")
    audio = fake.add_attachment(sad, "recording.opus", None)  # no content type: known by its extension
    target = await fake.send_message(attachments=[photo, audio], content="how do I sound?")
    interaction = await fake.invoke_message_command("Detect emotion", target)

    callback = await callback_of(fake, interaction, mark)
    assert callback.json["type"] == 5
    assert callback_flags(callback) & EPHEMERAL  # one's own message: answered privately too
    edit = await fake.wait_for_request("PATCH", webhook_path(fake, interaction, "/messages/@original"), 30, since=mark)
    assert_same_answer(edit.json["embeds"][0], expected)
    assert not fake.downloads_of(photo)
    assert not fake.find_requests("POST", messages_path(fake), since=mark)  # no reply to a non-voice message


async def test_non_audio_attachment_is_refused_ephemerally_and_the_bot_keeps_working(
    fake: FakeDiscord, bot: SERBot, predictor: Any, angry_note: bytes
) -> None:
    text_file = fake.add_attachment(b"hello, not audio\n", "notes.txt", "text/plain")
    mark = fake.mark()
    interaction = await fake.invoke_slash_with_attachment("emotion", "audio", text_file)
    callback = await callback_of(fake, interaction, mark)
    assert callback.json["type"] == 4  # answered at once, not deferred
    assert callback.json["data"]["flags"] & EPHEMERAL
    assert "notes.txt" in callback.json["data"]["content"] and "not an audio file" in callback.json["data"]["content"]
    assert not fake.downloads_of(text_file)

    expected = await expect(predictor, angry_note)
    note = fake.add_attachment(angry_note, "voice-message.ogg", "audio/ogg", voice_message=True, duration_s=4.0)
    mark = fake.mark()
    msg = await fake.send_message(attachments=[note], flags=VOICE_MESSAGE)
    reply = await fake.wait_for_request("POST", messages_path(fake), timeout=30, since=mark)
    assert str(reply.json["message_reference"]["message_id"]) == msg["id"]
    assert_same_answer(reply.json["embeds"][0], expected)


async def test_too_large_attachment_is_refused_without_download(
    fake: FakeDiscord, bot: SERBot, angry_note: bytes
) -> None:
    from ser_engine.errors import AudioTooLargeError

    big = fake.add_attachment(angry_note, "long-rant.ogg", "audio/ogg", size=MAX_BYTES + 1)
    mark = fake.mark()
    interaction = await fake.invoke_slash_with_attachment("emotion", "audio", big)
    callback = await callback_of(fake, interaction, mark)
    assert callback.json["type"] == 4
    assert callback.json["data"]["flags"] & EPHEMERAL
    assert callback.json["data"]["content"] == AudioTooLargeError(MAX_BYTES + 1, MAX_BYTES).user_message

    note = fake.add_attachment(
        angry_note, "voice-message.ogg", "audio/ogg", voice_message=True, duration_s=4.0, size=MAX_BYTES + 1
    )
    msg = await fake.send_message(attachments=[note], flags=VOICE_MESSAGE)
    reply = await fake.wait_for_request("POST", messages_path(fake), timeout=15, since=mark)
    assert str(reply.json["message_reference"]["message_id"]) == msg["id"]
    assert reply.json["content"] == AudioTooLargeError(MAX_BYTES + 1, MAX_BYTES).user_message
    assert not reply.json.get("embeds")
    assert not fake.downloads_of(big) and not fake.downloads_of(note)


async def test_undecodable_audio_replaces_the_thinking_message_by_an_ephemeral_error(
    fake: FakeDiscord, bot: SERBot, predictor: Any
) -> None:
    from ser_engine.errors import AudioError

    garbage = b"OggS" + secrets.token_bytes(4000)
    with pytest.raises(AudioError) as refused:
        await expect(predictor, garbage)
    broken = fake.add_attachment(garbage, "broken.ogg", "audio/ogg")
    mark = fake.mark()
    interaction = await fake.invoke_slash_with_attachment("emotion", "audio", broken)

    followup = await fake.wait_for_request("POST", webhook_path(fake, interaction), timeout=30, since=mark)
    assert (await callback_of(fake, interaction, mark)).json["type"] == 5
    assert fake.find_requests("DELETE", webhook_path(fake, interaction, "/messages/@original"), since=mark)
    assert followup.json["flags"] & EPHEMERAL
    assert followup.json["content"] == refused.value.user_message
    assert len(fake.downloads_of(broken)) == 1


async def test_a_voice_note_without_speech_is_answered_that_no_speech_was_heard(
    fake: FakeDiscord, bot: SERBot, predictor: Any
) -> None:
    """Issue 12: a square wave (which the RAVDESS model called "sad (1.00)") is refused by the speech detector."""
    import io

    import numpy as np
    import soundfile as sf

    from ser_engine.errors import NoSpeechError

    t = np.arange(int(3.0 * 16_000)) / 16_000
    square = 0.3 * np.sign(np.sin(2 * np.pi * 220.0 * t))
    buf = io.BytesIO()
    sf.write(buf, square, 16_000, format="OGG", subtype="VORBIS")
    data = buf.getvalue()
    with pytest.raises(NoSpeechError) as refused:
        await expect(predictor, data)
    note = fake.add_attachment(data, "voice-message.ogg", "audio/ogg", voice_message=True, duration_s=3.0)
    mark = fake.mark()
    msg = await fake.send_message(attachments=[note], flags=VOICE_MESSAGE)
    reply = await fake.wait_for_request("POST", messages_path(fake), timeout=30, since=mark)
    assert str(reply.json["message_reference"]["message_id"]) == msg["id"]
    assert reply.json["content"] == refused.value.user_message == "I couldn't hear any speech in that recording."
    assert not reply.json.get("embeds")


async def test_context_menu_on_a_message_without_audio(fake: FakeDiscord, bot: SERBot) -> None:
    target = await fake.send_message(content="just text")
    mark = fake.mark()
    interaction = await fake.invoke_message_command("Detect emotion", target)
    callback = await callback_of(fake, interaction, mark)
    assert callback.json["type"] == 4
    assert callback.json["data"]["flags"] & EPHEMERAL
    assert "no voice message or audio file" in callback.json["data"]["content"]


async def test_bot_resumes_after_a_dropped_gateway_and_keeps_answering(
    fake: FakeDiscord, bot: SERBot, predictor: Any, angry_note: bytes
) -> None:
    resumed = asyncio.Event()

    async def on_resumed() -> None:
        resumed.set()

    bot.add_listener(on_resumed)
    try:
        await fake.drop_gateway(code=4000)
        await asyncio.wait_for(resumed.wait(), 15)
    finally:
        bot.remove_listener(on_resumed)
    expected = await expect(predictor, angry_note)
    note = fake.add_attachment(angry_note, "voice-message.ogg", "audio/ogg", voice_message=True, duration_s=4.0)
    mark = fake.mark()
    await fake.send_message(attachments=[note], flags=VOICE_MESSAGE)
    reply = await fake.wait_for_request("POST", messages_path(fake), timeout=30, since=mark)
    assert_same_answer(reply.json["embeds"][0], expected)


async def test_the_token_never_reaches_the_logs(fake: FakeDiscord, bot: SERBot) -> None:
    lines = bot.test_logs.lines  # type: ignore[attr-defined]
    assert any("synced" in line for line in lines)  # the collector did see the bot's own logs
    assert not [line for line in lines if fake.token in line]


async def test_unexpected_failure_gets_an_apology_with_a_correlation_id(
    fake: FakeDiscord, bot: SERBot, angry_note: bytes
) -> None:
    audio = fake.add_attachment(angry_note, "voice-message.ogg", "audio/ogg")
    fake.fail_next("PATCH", r"/messages/@original$", status=400, message="Invalid Form Body (injected)")
    mark = fake.mark()
    interaction = await fake.invoke_slash_with_attachment("emotion", "audio", audio)

    followup = await fake.wait_for_request("POST", webhook_path(fake, interaction), timeout=30, since=mark)
    assert followup.json["flags"] & EPHEMERAL
    content = followup.json["content"]
    cid = re.search(r"error id `([0-9a-f]{8})`", content)
    assert cid and content.startswith("Sorry")
    assert "injected" not in content and "Traceback" not in content and "HTTPException" not in content
    logged = [line for line in bot.test_logs.lines if cid.group(1) in line]  # type: ignore[attr-defined]
    assert logged and "Traceback" in logged[0] and "injected" in logged[0]


async def test_service_timeout_and_busy_are_reported_to_the_user(
    fake: FakeDiscord, bot: SERBot, angry_note: bytes
) -> None:
    from ser_engine.errors import ServiceBusyError, ServiceTimeoutError
    from ser_engine.service import EmotionService

    original = bot.service
    assert original is not None

    async def send_notes(count: int) -> list[dict[str, Any]]:
        mark = fake.mark()
        sent = []
        for _ in range(count):
            note = fake.add_attachment(angry_note, "voice-message.ogg", "audio/ogg", voice_message=True, duration_s=4.0)
            sent.append(await fake.send_message(attachments=[note], flags=VOICE_MESSAGE))
        for _ in range(200):
            replies = fake.find_requests("POST", messages_path(fake), since=mark)
            if len(replies) == count:
                return [r.json for r in replies]
            await asyncio.sleep(0.1)
        raise AssertionError(f"expected {count} replies, got {len(replies)}")

    # Same model, a 1 ms budget: the analysis cannot finish in time.
    impatient = EmotionService(original.predictor, workers=1, max_pending=4, timeout_s=0.001)
    bot.service = impatient
    try:
        (reply,) = await send_notes(1)
        assert reply["content"] == ServiceTimeoutError(0.001).user_message and not reply.get("embeds")
    finally:
        bot.service = original
        await impatient.close()

    # One analysis at a time and nothing may wait: of three notes sent at once, some are refused as busy.
    narrow = EmotionService(original.predictor, workers=1, max_pending=1, timeout_s=30)
    bot.service = narrow
    try:
        replies = await send_notes(3)
    finally:
        bot.service = original
        await narrow.close()
    busy = [r for r in replies if r["content"] == ServiceBusyError().user_message]
    answered = [r for r in replies if r.get("embeds")]
    assert busy and answered and len(busy) + len(answered) == 3


# ------------------------------------- "Detect emotion" on someone else's voice
async def test_context_menu_on_another_members_message_answers_privately(
    fake: FakeDiscord, bot: SERBot, predictor: Any, angry_note: bytes
) -> None:
    expected = await expect(predictor, angry_note)
    bob, frank = fake.add_member("bob-e2e"), fake.add_member("frank-e2e")
    audio = fake.add_attachment(angry_note, "clip.ogg", "audio/ogg")  # an upload, not a voice note: no auto reply
    target = await fake.send_message(attachments=[audio], member=bob)
    mark = fake.mark()
    interaction = await fake.invoke_message_command_by("Detect emotion", target, invoker=frank)  # about bob's voice

    callback = await callback_of(fake, interaction, mark)
    assert callback.json["type"] == 5 and callback_flags(callback) & EPHEMERAL
    edit = await fake.wait_for_request("PATCH", webhook_path(fake, interaction, "/messages/@original"), 30, since=mark)
    assert_same_answer(edit.json["embeds"][0], expected)
    assert fake.original_message(interaction)["flags"] & EPHEMERAL
    assert not fake.find_requests("POST", r"^/channels/\d+/messages$", since=mark)  # nothing public


async def test_context_menu_honours_the_authors_opt_out_and_the_servers_channel_settings(
    fake: FakeDiscord, bot: SERBot, predictor: Any, angry_note: bytes
) -> None:
    from bot.cogs.emotion.cog import AnalysisOffHereError, OptedOutAuthorError

    store = bot.store
    assert store is not None
    guild_id = int(fake.guild_id)
    quiet = await fake.add_text_channel("no-analysis")
    carol, dave = fake.add_member("carol-e2e"), fake.add_member("dave-e2e")
    await store.opt_out(int(dave["user"]["id"]))
    await store.update_guild_settings(guild_id, denied_channels=[int(quiet["id"])])

    async def ask(target: dict[str, Any], invoker: dict[str, Any] | None = None) -> tuple[RecordedRequest, Any]:
        mark = fake.mark()
        interaction = await fake.invoke_message_command_by(
            "Detect emotion", target, invoker=invoker or fake.human_member
        )
        return await callback_of(fake, interaction, mark), interaction

    def refused_privately(callback: RecordedRequest, text: str) -> bool:
        data = callback.json["data"]
        return callback.json["type"] == 4 and bool(data["flags"] & EPHEMERAL) and data["content"] == text

    def upload() -> dict[str, Any]:
        return fake.add_attachment(angry_note, "clip.ogg", "audio/ogg")

    try:
        # The author opted out: refused, in any channel, and their file is not fetched.
        dave_note = upload()
        callback, _ = await ask(await fake.send_message(attachments=[dave_note], member=dave))
        assert refused_privately(callback, OptedOutAuthorError().user_message)
        # Another member's message in a channel the server does not analyse: refused.
        carol_quiet = upload()
        callback, _ = await ask(await fake.send_message(attachments=[carol_quiet], member=carol, channel=quiet))
        assert refused_privately(callback, AnalysisOffHereError().user_message)
        # One's own message there: answered, privately (a new member: no speaker statistics yet).
        own, gina = upload(), fake.add_member("gina-e2e")
        callback, interaction = await ask(await fake.send_message(attachments=[own], channel=quiet, member=gina), gina)
        assert callback.json["type"] == 5 and callback_flags(callback) & EPHEMERAL
        path = webhook_path(fake, interaction, "/messages/@original")
        edit = await fake.wait_for_request("PATCH", path, 30, since=callback.index)
        assert_same_answer(edit.json["embeds"][0], await expect(predictor, angry_note))
        # Automatic analysis switched off server-wide: another member's message in an ordinary channel is refused.
        await store.update_guild_settings(guild_id, auto_analyse=False)
        carol_general = upload()
        callback, _ = await ask(await fake.send_message(attachments=[carol_general], member=carol))
        assert refused_privately(callback, AnalysisOffHereError().user_message)
        assert not any(fake.downloads_of(a) for a in (dave_note, carol_quiet, carol_general))
        assert len(fake.downloads_of(own)) == 1
    finally:
        await store.update_guild_settings(guild_id, auto_analyse=True, denied_channels=[])
        await store.opt_in(int(dave["user"]["id"]))



async def test_context_menu_in_a_thread_follows_its_parent_channels_settings(
    fake: FakeDiscord, bot: SERBot, angry_note: bytes
) -> None:
    from bot.cogs.emotion.cog import AnalysisOffHereError

    store = bot.store
    assert store is not None
    guild_id = int(fake.guild_id)
    denied = await fake.add_text_channel("no-analysis-threads")
    thread = fake.add_unannounced_thread(denied, "old thread")  # not in the bot's cache: only the interaction tells
    hana, ivan = fake.add_member("hana-e2e"), fake.add_member("ivan-e2e")
    await store.update_guild_settings(guild_id, denied_channels=[int(denied["id"])])
    try:
        audio = fake.add_attachment(angry_note, "clip.ogg", "audio/ogg")
        target = await fake.send_message(attachments=[audio], member=hana, channel=thread)
        mark = fake.mark()
        interaction = await fake.invoke_message_command_by("Detect emotion", target, invoker=ivan)
        callback = await callback_of(fake, interaction, mark)
        assert callback.json["type"] == 4 and callback_flags(callback) & EPHEMERAL
        assert callback.json["data"]["content"] == AnalysisOffHereError().user_message
        assert not fake.downloads_of(audio)
    finally:
        await store.update_guild_settings(guild_id, denied_channels=[])


# ------------------------------------------------------------------ downloads
async def test_a_full_analysis_queue_refuses_before_downloading(
    fake: FakeDiscord, bot: SERBot, predictor: Any, angry_note: bytes
) -> None:
    import threading

    from ser_engine.errors import ServiceBusyError
    from ser_engine.service import EmotionService

    release = threading.Event()

    class Blocking:  # holds the one queue place until released
        def __init__(self, inner: Any) -> None:
            self.inner = inner

        def predict(self, source: Any, *args: Any, **kwargs: Any) -> Any:
            if source == b"hold":
                release.wait(30)
                raise ValueError("released")
            return self.inner.predict(source, *args, **kwargs)

        def __getattr__(self, name: str) -> Any:
            return getattr(self.inner, name)

    original = bot.service
    assert original is not None
    full = EmotionService(Blocking(predictor), workers=1, max_pending=1, timeout_s=30)  # type: ignore[arg-type]
    holder = asyncio.create_task(full.analyse(b"hold"))
    await asyncio.sleep(0)
    assert full.pending == full.max_pending
    bot.service = full
    erin = fake.add_member("erin-e2e")
    try:
        note = fake.add_attachment(angry_note, "voice-message.ogg", "audio/ogg", voice_message=True, duration_s=4.0)
        mark = fake.mark()
        msg = await fake.send_message(attachments=[note], flags=VOICE_MESSAGE, member=erin)
        reply = await fake.wait_for_request("POST", messages_path(fake), timeout=30, since=mark)
        assert str(reply.json["message_reference"]["message_id"]) == msg["id"]
        assert reply.json["content"] == ServiceBusyError().user_message
        assert not fake.downloads_of(note)  # refused before a byte was fetched
    finally:
        bot.service = original
        release.set()
        with pytest.raises(ValueError):
            await holder
        await full.close()


async def test_downloads_are_bounded_across_the_bot(
    fake: FakeDiscord, bot: SERBot, predictor: Any, angry_note: bytes
) -> None:
    expected = await expect(predictor, angry_note)
    members = [fake.add_member(f"dl-{i}-e2e") for i in range(3)]
    gate = fake.hold_downloads()
    try:
        mark = fake.mark()
        with Outcomes(bot) as outcomes:
            sent = []
            for member in members:  # voice notes ...
                note = fake.add_attachment(
                    angry_note, "voice-message.ogg", "audio/ogg", voice_message=True, duration_s=4.0
                )
                sent.append(await fake.send_message(attachments=[note], flags=VOICE_MESSAGE, member=member))
            slash = []
            for i in range(2):  # ... and /emotion, all waiting on the CDN at once
                audio = fake.add_attachment(angry_note, "voice-message.ogg", "audio/ogg")
                slash.append(
                    await fake.invoke_slash(
                        "emotion", [{"name": "audio", "type": 11, "value": audio["id"]}],
                        {"attachments": {audio["id"]: audio}}, invoker=fake.add_member(f"dl-slash-{i}-e2e"),
                    )
                )  # fmt: skip
            for _ in range(100):
                if fake.cdn_active >= MAX_DOWNLOADS:
                    break
                await asyncio.sleep(0.05)
            await asyncio.sleep(1.0)  # time for any further download to start if the bound did not hold
            assert fake.cdn_active == fake.cdn_peak_active == MAX_DOWNLOADS
            fake.release_downloads()
            for msg in sent:
                assert (await outcomes.of(msg)).status == "answered"
        for interaction in slash:
            edit = await fake.wait_for_request(
                "PATCH", webhook_path(fake, interaction, "/messages/@original"), 30, since=mark
            )
            assert_same_answer(edit.json["embeds"][0], expected)
        assert fake.cdn_peak_active == MAX_DOWNLOADS
    finally:
        gate.set()
        fake.release_downloads()


@pytest.mark.parametrize("mode", ["chunked", "exact"])
async def test_a_body_larger_than_the_declared_size_is_cut_off_at_the_cap(
    fake: FakeDiscord, bot: SERBot, predictor: Any, angry_note: bytes, mode: str
) -> None:
    from bot.cogs.emotion.media import LargerThanDeclaredError

    # Discord declares the voice note's real size; the CDN sends it followed by 48 MiB more
    # (24 x SER_MAX_BYTES), without Content-Length ("chunked") or with an honest one ("exact").
    bomb = angry_note + bytes(48 * 2**20)
    note = fake.add_attachment(bomb, "voice-message.ogg", "audio/ogg", voice_message=True, duration_s=4.0,
                               size=len(angry_note))  # fmt: skip
    fake.craft_download(note, mode)
    member = fake.add_member(f"bomb-{mode}-e2e")
    mark = fake.mark()
    with Outcomes(bot) as outcomes:
        msg = await fake.send_message(attachments=[note], flags=VOICE_MESSAGE, member=member)
        assert (await outcomes.of(msg)).status == "refused"
    (reply,) = fake.find_requests("POST", messages_path(fake), since=mark)
    assert reply.json["content"] == LargerThanDeclaredError().user_message and not reply.json.get("embeds")
    assert len(fake.downloads_of(note)) == 1
    for _ in range(50):  # the CDN notices the hang-up at its next write
        if fake.cdn_active == 0:
            break
        await asyncio.sleep(0.1)
    # Loopback socket buffers hold a few MiB; the bot stopped reading far before the end of the body.
    sent = fake.cdn_bytes_sent[note["id"]]
    print(f"download cut-off figures ({mode}): declared {len(angry_note)} B, body {len(bomb)} B, CDN sent {sent} B")
    assert sent < 16 * 2**20

    # The same audio sent honestly in chunks is answered as usual.
    expected = await expect(predictor, angry_note)
    fine = fake.add_attachment(angry_note, "voice-message.ogg", "audio/ogg", voice_message=True, duration_s=4.0)
    fake.craft_download(fine, mode)
    mark = fake.mark()
    msg = await fake.send_message(attachments=[fine], flags=VOICE_MESSAGE, member=member)
    reply = await fake.wait_for_request("POST", messages_path(fake), timeout=30, since=mark)
    assert str(reply.json["message_reference"]["message_id"]) == msg["id"]
    assert_same_answer(reply.json["embeds"][0], expected)
    assert fake.cdn_bytes_sent[fine["id"]] == len(angry_note)


# -------------------------------------------------- the producing model's version
async def test_a_stored_analysis_carries_the_version_of_the_model_that_produced_it(
    fake: FakeDiscord, bot: SERBot, predictor: Any, angry_note: bytes, model_path: Path, tmp_path: Path
) -> None:
    import json

    from sqlalchemy import select

    from bot.storage.models import Analysis
    from ser_engine.bundle import load_bundle, save_bundle
    from ser_engine.predict import Predictor

    # A second model file: the same classifier re-saved with other metadata, hence another SHA-256.
    bundle = load_bundle(model_path)
    bundle.metadata["copy_for_test"] = True
    copy_path = tmp_path / "copy.joblib"
    save_bundle(bundle, copy_path)
    copy_sha = json.loads(copy_path.with_suffix(".json").read_text())["sha256"]
    copy = Predictor.load(copy_path, limits=predictor.limits)
    assert copy.model_version == f"copy@sha256:{copy_sha}" != predictor.model_version

    service, store = bot.service, bot.store
    assert service is not None and store is not None
    restore = service.swap_predictor(copy)
    try:
        note = fake.add_attachment(angry_note, "voice-message.ogg", "audio/ogg", voice_message=True, duration_s=4.0)
        with Outcomes(bot) as outcomes:
            msg = await fake.send_message(attachments=[note], flags=VOICE_MESSAGE, member=fake.add_member("mv-e2e"))
            outcome = await outcomes.of(msg)
    finally:
        service.swap_predictor(restore)
    assert outcome.status == "answered" and outcome.stored_id is not None
    assert outcome.prediction.model_version == f"copy@sha256:{copy_sha}"
    async with store.engine.connect() as conn:
        row = (await conn.execute(select(Analysis.__table__).where(Analysis.id == outcome.stored_id))).mappings().one()
    assert row["model_version"] == f"copy@sha256:{copy_sha}"
    assert row["message_id"] == int(msg["id"])


# ------------------------------------------------- the process a user starts
def bot_env(fake: FakeDiscord, token: str, **extra: str) -> dict[str, str]:
    """The test process's environment without bot settings, plus the fake's URL and ``extra``."""
    env = {k: v for k, v in os.environ.items() if k.lower() not in Settings.model_fields}
    env.update(PYTHONPATH=str(ROOT), DISCORD_TOKEN=token, DISCORD_API_BASE_URL=fake.base_url, **extra)
    return env


async def test_python_m_bot_answers_a_voice_note_and_stops_cleanly_on_sigterm(
    tmp_path: Path, model_path: Path, angry_note: bytes
) -> None:
    async with FakeDiscord(token="MTA5.proc." + secrets.token_urlsafe(24)) as fake:
        env = bot_env(fake, fake.token, SER_MODEL_PATH=str(model_path), SER_WORKERS="1", LOG_LEVEL="DEBUG")
        await allow_analysis_in(tmp_path / "data", fake.guild_id)  # the default DATA_DIR; consent first
        log_path = tmp_path / "bot.log"
        with open(log_path, "wb") as log:
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "bot", cwd=tmp_path, env=env, stdin=asyncio.subprocess.DEVNULL,
                stdout=log, stderr=log,
            )  # fmt: skip
            try:
                await fake.wait_until_connected(timeout=90)
                note = fake.add_attachment(
                    angry_note, "voice-message.ogg", "audio/ogg", voice_message=True, duration_s=4.0
                )
                mark = fake.mark()
                msg = await fake.send_message(attachments=[note], flags=VOICE_MESSAGE)
                reply = await fake.wait_for_request("POST", messages_path(fake), timeout=60, since=mark)
                assert str(reply.json["message_reference"]["message_id"]) == msg["id"]
                assert reply.json["embeds"]
            finally:
                if proc.returncode is None:
                    proc.send_signal(signal.SIGTERM)
                code = await asyncio.wait_for(proc.wait(), 30)
    output = log_path.read_text()
    assert code == 0, output[-3000:]
    assert "shutting down" in output and "Traceback" not in output
    assert fake.token not in output  # not even at DEBUG level
    assert fake.find_requests("GET", r"^/gateway/bot$")  # the gateway URL came from the configured API


async def test_python_m_bot_with_a_rejected_token_exits_1(tmp_path: Path, model_path: Path) -> None:
    wrong = "MTA5.wrong." + secrets.token_urlsafe(24)
    async with FakeDiscord() as fake:
        env = bot_env(fake, wrong, SER_MODEL_PATH=str(model_path))  # the model is checked before logging in
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bot", cwd=tmp_path, env=env, stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        )  # fmt: skip
        out, _ = await asyncio.wait_for(proc.communicate(), 60)
        assert [r.authorized for r in fake.find_requests("GET", r"^/users/@me$")] == [False]
    text = out.decode()
    assert proc.returncode == 1, text[-3000:]
    assert "DISCORD_TOKEN" in text and "Traceback" not in text
    assert wrong not in text
