"""Feedback buttons and speaker statistics over the fake Discord.

The real SERBot with the configured model talks to a fake Discord on loopback
and stores into a real SQLite database. Under each emotion answer the speaker
confirms or corrects the label; with consent the clip's feature vector (never
the audio) and the label are stored for ``/retrain``. Every guild voice note
updates its speaker's running feature statistics, which ``/privacy delete``
removes. Expected labels and vectors are computed by the engine on the same
bytes, never hard-coded.
"""

from __future__ import annotations

import asyncio
import os
import re
import secrets
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import pytest_asyncio
from aiohttp import web
from sqlalchemy import select

from bot.client import SERBot
from bot.cogs.emotion.cog import VOICE_NOTE_EVENT, VoiceNoteOutcome
from bot.config import Settings
from bot.discord_api import restore_defaults
from bot.storage import Store, sqlite_url
from bot.storage.models import Feedback
from tests._consent import allow_analysis
from tests.fake_discord import FakeDiscord, RecordedRequest
from tests.fake_discord import payloads as p
from tests.fake_discord.server import API_PREFIX, _error, _json

pytestmark = pytest.mark.asyncio(loop_scope="module")

ROOT = Path(__file__).resolve().parents[1]
IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}
EPHEMERAL = 64
VOICE_MESSAGE = 8192


# ------------------------------------------------------------------ helpers
class FakeDiscordWithHistory(FakeDiscord):
    """The fake Discord plus ``GET /channels/{channel}/messages/{message}`` (fetching one message).

    The bot fetches a voice note again when it must recompute its features
    after a restart.
    """

    async def _not_found(self, request: web.Request) -> web.Response:
        found = re.fullmatch(re.escape(API_PREFIX) + r"/channels/(\d+)/messages/(\d+)", request.path)
        if request.method == "GET" and found:
            msg = self.messages.get(found[2])
            if msg is not None and msg["channel_id"] == found[1]:
                return _json(msg)
            return _error(404, 10008, "Unknown Message")
        return await super()._not_found(request)


class Outcomes:
    """Collects the bot's ``on_voice_note_processed`` events by message id."""

    def __init__(self) -> None:
        self.by_message: dict[int, VoiceNoteOutcome] = {}
        self.changed = asyncio.Event()

    async def on_voice_note_processed(self, outcome: VoiceNoteOutcome) -> None:
        self.by_message[outcome.message_id] = outcome
        self.changed.set()

    async def wait(self, message: dict[str, Any], timeout: float = 45.0) -> VoiceNoteOutcome:
        key = int(message["id"])

        async def arrived() -> VoiceNoteOutcome:
            while key not in self.by_message:
                self.changed.clear()
                await self.changed.wait()
            return self.by_message[key]

        return await asyncio.wait_for(arrived(), timeout)


def uid(member: dict[str, Any]) -> int:
    return int(member["user"]["id"])


async def callback_of(fake: FakeDiscord, interaction: dict[str, Any], since: int) -> RecordedRequest:
    path = rf"^/interactions/{interaction['id']}/{re.escape(interaction['token'])}/callback$"
    return await fake.wait_for_request("POST", path, timeout=20, since=since)


def buttons(message: dict[str, Any]) -> dict[str, str]:
    """``{caption: custom_id}`` of a message's buttons."""
    return {c["label"]: c["custom_id"] for row in message.get("components", []) for c in row["components"]}


async def send_note(fake: FakeDiscord, audio: bytes, member: dict[str, Any]) -> dict[str, Any]:
    note = fake.add_attachment(audio, "voice-message.ogg", "audio/ogg", voice_message=True, duration_s=3.5)
    return await fake.send_message(attachments=[note], flags=VOICE_MESSAGE, member=member)


async def answered_note(fake: FakeDiscord, bot: SERBot, audio: bytes, member: dict[str, Any]) -> tuple[Any, dict]:
    """Post a voice note; return (outcome, the bot's reply as the fake Discord holds it)."""
    msg = await send_note(fake, audio, member)
    outcome = await bot.outcomes.wait(msg)  # type: ignore[attr-defined]
    assert outcome.status == "answered", outcome
    (reply,) = [
        m for m in fake.messages.values() if str((m.get("message_reference") or {}).get("message_id")) == msg["id"]
    ]
    return outcome, reply


async def feedback_rows(store: Store, user_id: int) -> list[Any]:
    async with store.engine.connect() as conn:
        result = await conn.execute(
            select(Feedback.__table__).where(Feedback.user_id == user_id).order_by(Feedback.id)
        )
        return list(result.mappings().all())


async def click(fake: FakeDiscord, message: dict[str, Any], custom_id: str, member: dict[str, Any]) -> dict[str, Any]:
    """Click a button as ``member``; return the callback's JSON."""
    mark = fake.mark()
    interaction = await fake.invoke_component(message, custom_id, invoker=member)
    return {"interaction": interaction, **(await callback_of(fake, interaction, mark)).json}


def vector(row: Any) -> np.ndarray:
    return np.frombuffer(row["features"], dtype="<f4")


# ------------------------------------------------------------------ fixtures


@pytest.fixture(scope="module")
def key(predictor: Any) -> str:
    from ser_engine.cache import config_key

    return config_key(predictor.bundle.feature_config)


@pytest.fixture(scope="module")
def notes(voice_note_factory: Any, fixture_clips: Any) -> list[bytes]:
    """The four real RAVDESS test clips as Discord voice notes (Ogg/Opus 48 kHz mono)."""
    return [voice_note_factory(Path(c)).read_bytes() for c in fixture_clips]


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def world() -> Any:
    async with FakeDiscordWithHistory(token="MTA5.fb." + secrets.token_urlsafe(24)) as fake:
        fake.speakers = {n: fake.add_member(n) for n in ("ann", "bea", "cal", "dan")}  # type: ignore[attr-defined]
        fake.bystander = fake.add_member("bob")  # type: ignore[attr-defined]
        yield fake


@pytest.fixture(scope="module")
def database_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    return sqlite_url(tmp_path_factory.mktemp("feedback-db") / "ser.db")


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def store(database_url: str) -> Any:
    """The test's own connection to the bot's database."""
    st = await Store.open(database_url)
    try:
        yield st
    finally:
        await st.close()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def bot(world: FakeDiscord, store: Store, database_url: str, model_path: Path,
              tmp_path_factory: pytest.TempPathFactory) -> Any:  # fmt: skip
    """The real bot on the module's database, talking to the fake Discord."""
    fake = world
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
    try:
        from bot.cogs.admin.settings import LifecycleSettings

        client.lifecycle_settings = LifecycleSettings(  # type: ignore[attr-defined]
            _env_file=None, ser_registry_dir=tmp_path_factory.mktemp("registry")
        )
    except ImportError:
        pass
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
async def test_the_speakers_confirmation_after_consent_stores_one_vector_and_label(
    world: FakeDiscord, bot: SERBot, store: Store, notes: list[bytes], predictor: Any, key: str
) -> None:
    fake, ann = world, world.speakers["ann"]  # type: ignore[attr-defined]
    outcome, reply = await answered_note(fake, bot, notes[0], ann)
    expected = predictor.predict(notes[0])
    assert outcome.prediction.label == expected.label
    found = buttons(reply)
    confirm = found[f"✓ {expected.label}"]
    assert set(found) == {f"✓ {expected.label}", "Not quite…"}

    # Someone else's click is refused and stores nothing.
    refused = await click(fake, reply, confirm, world.bystander)  # type: ignore[attr-defined]
    assert refused["type"] == 4 and refused["data"]["flags"] & EPHEMERAL
    assert refused["data"]["content"] == "Only the speaker can correct this."
    assert await feedback_rows(store, uid(ann)) == [] and await store.get_feedback_consent(uid(ann)) is None

    # The speaker's first click asks for consent, ephemerally.
    asked = await click(fake, reply, confirm, ann)
    assert asked["type"] == 4 and asked["data"]["flags"] & EPHEMERAL
    assert "never the audio" in asked["data"]["content"]
    prompt = fake.original_message(asked["interaction"])
    assert prompt is not None and set(buttons(prompt)) == {"Yes, keep it", "No thanks"}
    assert await feedback_rows(store, uid(ann)) == []

    done = await click(fake, prompt, buttons(prompt)["Yes, keep it"], ann)
    assert done["type"] == 7 and "saved" in done["data"]["content"] and done["data"]["components"] == []
    (row,) = await feedback_rows(store, uid(ann))
    assert row["label"] == expected.label and bool(row["consent"]) is True
    assert row["message_id"] == outcome.message_id and row["guild_id"] == int(fake.guild_id)
    assert row["feature_config_version"] == key
    assert row["n_features"] == predictor.bundle.feature_config.n_features == vector(row).size
    np.testing.assert_allclose(vector(row), expected.features, rtol=1e-4, atol=1e-5)
    assert await store.get_feedback_consent(uid(ann)) is True
    (sample,) = [s for s in await store.training_feedback(key) if s.user_id == uid(ann)]
    assert sample.label == expected.label

    # A second click on the same answer does not store a second row.
    again = await click(fake, reply, confirm, ann)
    assert "already" in again["data"]["content"]
    assert len(await feedback_rows(store, uid(ann))) == 1


async def test_a_correction_after_a_restart_recomputes_the_vector_from_the_voice_note(
    world: FakeDiscord, bot: SERBot, store: Store, notes: list[bytes], predictor: Any, key: str
) -> None:
    fake, ann = world, world.speakers["ann"]  # type: ignore[attr-defined]
    before = len(await feedback_rows(store, uid(ann)))  # consent given in the previous test
    outcome, reply = await answered_note(fake, bot, notes[1], ann)
    expected = predictor.predict(notes[1])
    bot.get_cog("Feedback").memory.clear()  # type: ignore[union-attr]  # as after a restart

    picked = await click(fake, reply, buttons(reply)["Not quite…"], ann)
    assert picked["type"] == 4 and picked["data"]["flags"] & EPHEMERAL
    picker = fake.original_message(picked["interaction"])
    assert picker is not None
    choices = buttons(picker)
    assert set(choices) == {lab.capitalize() for lab in predictor.labels}
    other = next(lab for lab in predictor.labels if lab != expected.label)
    downloads = len(fake.find_requests("GET", r"^/attachments/"))
    done = await click(fake, picker, choices[other.capitalize()], ann)
    assert done["type"] == 6  # deferred in place while the note is fetched and analysed again
    edit = await fake.wait_for_request(
        "PATCH", rf"^/webhooks/{fake.application_id}/{re.escape(done['interaction']['token'])}/messages/@original$", 30
    )
    assert "saved" in edit.json["content"] and edit.json["components"] == []
    assert len(fake.find_requests("GET", r"^/attachments/")) == downloads + 1  # fetched again, not kept
    rows = await feedback_rows(store, uid(ann))
    assert len(rows) == before + 1
    row = rows[-1]
    assert row["label"] == other and row["message_id"] == outcome.message_id
    np.testing.assert_allclose(vector(row), expected.features, rtol=1e-4, atol=1e-5)


async def test_consent_no_stores_nothing_and_is_remembered(
    world: FakeDiscord, bot: SERBot, store: Store, notes: list[bytes]
) -> None:
    fake, bea = world, world.speakers["bea"]  # type: ignore[attr-defined]
    outcome, reply = await answered_note(fake, bot, notes[2], bea)
    confirm = buttons(reply)[f"✓ {outcome.prediction.label}"]
    asked = await click(fake, reply, confirm, bea)
    prompt = fake.original_message(asked["interaction"])
    done = await click(fake, prompt, buttons(prompt)["No thanks"], bea)
    assert done["type"] == 7 and done["data"]["components"] == []
    assert await store.get_feedback_consent(uid(bea)) is False
    assert await feedback_rows(store, uid(bea)) == []

    again = await click(fake, reply, confirm, bea)  # not asked twice, still nothing stored
    assert again["type"] == 4 and not again["data"].get("components")
    assert "Nothing was stored" in again["data"]["content"]
    assert await feedback_rows(store, uid(bea)) == []


async def test_emotion_command_answer_carries_buttons_for_the_uploader(
    world: FakeDiscord, bot: SERBot, store: Store, notes: list[bytes], predictor: Any
) -> None:
    fake = world
    audio = fake.add_attachment(notes[3], "clip.ogg", "audio/ogg")
    mark = fake.mark()
    interaction = await fake.invoke_slash_with_attachment("emotion", "audio", audio)
    path = rf"^/webhooks/{fake.application_id}/{re.escape(interaction['token'])}/messages/@original$"
    edit = await fake.wait_for_request("PATCH", path, 30, since=mark)
    expected = predictor.predict(notes[3])
    answer = fake.original_message(interaction)
    assert answer is not None and edit.json["embeds"]
    confirm = buttons(answer)[f"✓ {expected.label}"]
    assert f":{fake.human['id']}:" in confirm and confirm.endswith(f":{interaction['id']}:{expected.label}")
    refused = await click(fake, answer, confirm, world.bystander)  # type: ignore[attr-defined]
    assert refused["data"]["content"] == "Only the speaker can correct this."
    asked = await click(fake, answer, confirm, fake.human_member)
    assert asked["type"] == 4 and "never the audio" in asked["data"]["content"]


async def test_speaker_statistics_count_every_note_and_are_deleted_with_the_users_data(
    world: FakeDiscord, bot: SERBot, store: Store, notes: list[bytes], predictor: Any, key: str
) -> None:
    fake, cal = world, world.speakers["cal"]  # type: ignore[attr-defined]
    n_notes = 3
    vectors = []
    for i in range(n_notes):
        outcome, _ = await answered_note(fake, bot, notes[i], cal)
        min_clips = predictor.min_clips
        if min_clips is None:
            assert outcome.prediction.normalization == "none"
        else:  # the speaker's own statistics once there are enough of their earlier notes
            assert outcome.prediction.normalization == ("speaker" if i >= min_clips else "fallback")
        vectors.append(outcome.prediction.features)
    stats = await store.get_speaker_stats(uid(cal), key)
    assert stats is not None and stats.n == n_notes
    X = np.asarray(vectors, dtype=np.float64)
    np.testing.assert_allclose(stats.mean, X.mean(axis=0), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(stats.m2, ((X - X.mean(axis=0)) ** 2).sum(axis=0), rtol=1e-5, atol=1e-5)

    mark = fake.mark()
    interaction = await fake.invoke_slash("privacy", [p.subcommand("delete")], invoker=cal)
    question = (await callback_of(fake, interaction, mark)).json["data"]
    prompt = fake.original_message(interaction)
    confirm = {c["label"]: c["custom_id"] for row in question["components"] for c in row["components"]}
    done = await click(fake, prompt, confirm["Delete my data"], cal)
    assert "Deleted" in done["data"]["content"]
    assert await store.get_speaker_stats(uid(cal), key) is None
    assert (await store.user_summary(uid(cal))).speaker_stats == 0


async def test_a_speaker_normalising_model_uses_the_speakers_own_statistics_once_there_are_enough(
    world: FakeDiscord, bot: SERBot, store: Store, notes: list[bytes], predictor: Any, key: str,
    fixture_clips: Any,
) -> None:  # fmt: skip
    """A small model trained with speaker normalisation (min_clips 2) on the four fixture clips."""
    from ser_engine.corpora import load_ravdess
    from ser_engine.normalization import SpeakerStats
    from ser_engine.predict import Predictor
    from ser_engine.training import train_model

    clips = load_ravdess(Path(fixture_clips[0]).parent)
    X = np.stack([predictor.predict(c.path).features for c in clips])
    bundle = await asyncio.to_thread(
        train_model, clips, preset="tutorial", normalization="speaker", min_clips=2, X=X,
        feature_config=predictor.bundle.feature_config, overrides={"hidden_layer_sizes": (16,), "max_iter": 50},
    )  # fmt: skip
    normalising = Predictor(bundle)
    assert normalising.min_clips == 2
    fake, dan = world, world.speakers["dan"]  # type: ignore[attr-defined]
    assert bot.service is not None
    previous = bot.service.swap_predictor(normalising)
    try:
        outcomes = [(await answered_note(fake, bot, notes[i], dan))[0] for i in range(3)]
    finally:
        bot.service.swap_predictor(previous)
    assert [o.prediction.normalization for o in outcomes] == ["fallback", "fallback", "speaker"]
    earlier = SpeakerStats.of(np.stack([o.prediction.features for o in outcomes[:2]]))
    third = outcomes[2].prediction
    reference = normalising.classify_features(third.features, speaker_stats=earlier)
    assert third.probabilities == pytest.approx(reference.probabilities, abs=1e-6)
    without = normalising.classify_features(third.features)  # global statistics: a different answer
    assert without.normalization == "fallback"
    assert not np.allclose(list(without.probabilities.values()), list(third.probabilities.values()), atol=1e-6)
    stats = await store.get_speaker_stats(uid(dan), key)
    assert stats is not None and stats.n == 3
