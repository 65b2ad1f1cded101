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
from tests.fake_discord import FakeDiscord, RecordedRequest

pytestmark = pytest.mark.asyncio(loop_scope="module")

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(__file__).resolve().parent / "data"
IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}
MAX_BYTES = 2 * 2**20  # the bot's SER_MAX_BYTES in these tests
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


# --------------------------------------------------------------------- tests
async def test_bot_connects_with_its_intents_and_registers_commands(fake: FakeDiscord, bot: SERBot) -> None:
    assert fake.identifies and fake.identifies[-1]["intents"] == INTENTS.value
    assert INTENTS.message_content and INTENTS.guild_messages and INTENTS.dm_messages and INTENTS.guilds
    assert all(r.authorized for r in fake.find_requests("GET", r"^/(users/@me|gateway/bot)$"))
    slash = fake.command("emotion")
    assert [(o["name"], o["type"], o.get("required")) for o in slash["options"]] == [("audio", 11, True)]
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
    assert not int((callback.json.get("data") or {}).get("flags") or 0) & EPHEMERAL
    edit = await fake.wait_for_request("PATCH", webhook_path(fake, interaction, "/messages/@original"), 30, since=mark)
    assert edit.index > callback.index
    assert_same_answer(edit.json["embeds"][0], expected)


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
