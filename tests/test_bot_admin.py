"""Model life cycle over the fake Discord: /retrain, the quality gate, /model rollback and activate.

One bot serves the module (tests run in order and build on each other's
registry state).  Training uses a small RAVDESS subset (4 actors x 4
emotions, 128 clips) so each run takes seconds.  Expected answers are
computed by the engine on the bytes the bot downloads, from the very
registry versions the bot should serve.
"""

from __future__ import annotations

import asyncio
import re
import secrets
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from bot.client import SERBot
from bot.cogs.admin import LifecycleSettings
from bot.cogs.admin.cog import NOT_ALLOWED
from bot.config import DEFAULT_MODEL_PATH, Settings
from bot.discord_api import restore_defaults
from ser_engine.predict import Predictor
from ser_engine.registry import ModelRegistry
from tests.fake_discord import FakeDiscord
from tests.fake_discord import payloads as p

pytestmark = pytest.mark.asyncio(loop_scope="module")

ROOT = Path(__file__).resolve().parents[1]
EPHEMERAL = 64
VOICE_MESSAGE = 8192
SUBSET = ["calm", "happy", "sad", "angry"]


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def fake() -> Any:
    async with FakeDiscord(token="MTA5.fake." + secrets.token_urlsafe(24)) as server:
        yield server


@pytest.fixture(scope="module")
def registry_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("registry")


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def bot(fake: FakeDiscord, ravdess_dir: Path, registry_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Any:
    data = tmp_path_factory.mktemp("botdata")
    settings = Settings(_env_file=None, discord_token=fake.token, discord_api_base_url=fake.base_url,
                        ser_model_path=ROOT / DEFAULT_MODEL_PATH, ser_workers=2, data_dir=data)  # fmt: skip
    client = SERBot(settings, guild_ready_timeout=0.2)
    client.lifecycle_settings = LifecycleSettings(  # type: ignore[attr-defined]
        _env_file=None, ser_registry_dir=registry_dir, ser_corpus_dirs=str(ravdess_dir),
        ser_feature_cache_dir=data / "cache", ser_retrain_emotions=",".join(SUBSET),
        ser_retrain_speakers="01,02,03,04", ser_retrain_folds=4, ser_retrain_max_iter=200,
        ser_owner_ids="", ser_promote_margin=0.02,
    )  # fmt: skip
    runner = asyncio.create_task(client.start(settings.discord_token.get_secret_value()))
    ready = asyncio.create_task(client.wait_until_ready())
    try:
        done, _ = await asyncio.wait({runner, ready}, timeout=90, return_when=asyncio.FIRST_COMPLETED)
        if runner in done:
            runner.result()
        assert ready in done
        yield client
    finally:
        ready.cancel()
        await client.close()
        await asyncio.wait_for(runner, 30)
        restore_defaults()


@pytest.fixture(scope="module")
def note(voice_note_factory: Any, angry_clip: Path) -> bytes:
    return voice_note_factory(angry_clip).read_bytes()


def admin(fake: FakeDiscord) -> dict[str, Any]:
    user = p.user(p.snowflake(), "admin-bob")
    return p.member(user, [], permissions=p.MEMBER_PERMISSIONS | p.MANAGE_GUILD)


async def slash(fake: FakeDiscord, name: str, invoker: dict[str, Any], sub: str | None = None,
                options: list[dict[str, Any]] | None = None) -> dict[str, Any]:  # fmt: skip
    opts = [p.subcommand(sub, options or [])] if sub else (options or [])
    interaction = p.slash_interaction(application_id=fake.application_id, command=fake.command(name),
                                      guild_id=fake.guild_id, channel=fake.channel, invoker=invoker,
                                      options=opts, resolved={})  # fmt: skip
    return await fake._dispatch_interaction(interaction)


async def callback(fake: FakeDiscord, interaction: dict[str, Any], since: int) -> Any:
    path = rf"^/interactions/{interaction['id']}/{re.escape(interaction['token'])}/callback$"
    return await fake.wait_for_request("POST", path, timeout=20, since=since)


def edits(fake: FakeDiscord, interaction: dict[str, Any], since: int) -> list[Any]:
    path = rf"^/webhooks/{fake.application_id}/{re.escape(interaction['token'])}/messages/@original$"
    return fake.find_requests("PATCH", path, since=since)


async def final_edit(fake: FakeDiscord, interaction: dict[str, Any], since: int, timeout: float = 120) -> Any:
    path = rf"^/webhooks/{fake.application_id}/{re.escape(interaction['token'])}/messages/@original$"

    def done(r: Any) -> bool:
        return bool(re.search(r"Training (finished|failed)", (r.json or {}).get("content") or ""))

    return await fake.wait_for_request("PATCH", path, timeout=timeout, since=since, where=done)


async def answer_to(fake: FakeDiscord, audio: bytes) -> tuple[dict[str, Any], Any]:
    """Post a voice note from the human; return (its reply request's embed, the reply request)."""
    att = fake.add_attachment(audio, "voice-message.ogg", "audio/ogg", voice_message=True, duration_s=3.5)
    mark = fake.mark()
    msg = await fake.send_message(attachments=[att], flags=VOICE_MESSAGE)
    path = rf"^/channels/{fake.channel['id']}/messages$"
    reply = await fake.wait_for_request(
        "POST", path, timeout=30, since=mark,
        where=lambda r: str(((r.json or {}).get("message_reference") or {}).get("message_id")) == msg["id"],
    )  # fmt: skip
    return reply.json["embeds"][0], reply


def label_of(embed: dict[str, Any]) -> str:
    found = re.search(r"\*\*(\w+)\*\*", embed["description"])
    assert found, embed
    return found.group(1)


def expected(registry_dir: Path, version: int, audio: bytes) -> Any:
    return Predictor(ModelRegistry(registry_dir).load(version)).predict(audio)


# --------------------------------------------------------------------- tests
async def test_registry_adopts_the_shipped_model_and_serves_it(
    fake: FakeDiscord, bot: SERBot, registry_dir: Path, note: bytes
) -> None:
    registry = ModelRegistry(registry_dir)
    assert registry.version_numbers() == [1] and registry.active_version == 1
    assert registry.get(1).sha256 == ModelRegistry(registry_dir).get(1).sha256
    embed, _ = await answer_to(fake, note)
    assert label_of(embed) == (await asyncio.to_thread(expected, registry_dir, 1, note)).label


async def test_non_admin_is_refused(fake: FakeDiscord, bot: SERBot, registry_dir: Path) -> None:
    for name, sub in (("retrain", None), ("model", "rollback"), ("model", "activate")):
        mark = fake.mark()
        opts = [p.option("version", 4, 1)] if sub == "activate" else None
        interaction = await slash(fake, name, fake.human_member, sub, opts)
        cb = await callback(fake, interaction, mark)
        assert cb.json["type"] == 4 and cb.json["data"]["flags"] & EPHEMERAL
        assert cb.json["data"]["content"] == NOT_ALLOWED
    assert bot.get_cog("Admin").job is None  # type: ignore[union-attr]
    assert ModelRegistry(registry_dir).version_numbers() == [1]


async def test_retrain_shows_progress_answers_meanwhile_and_promotes(
    fake: FakeDiscord, bot: SERBot, registry_dir: Path, note: bytes
) -> None:
    mark = fake.mark()
    interaction = await slash(fake, "retrain", admin(fake))
    cb = await callback(fake, interaction, mark)
    assert cb.json["type"] == 4 and not (cb.json["data"].get("flags") or 0) & EPHEMERAL
    # A second admin is told a training runs, and by whom.
    other = await slash(fake, "retrain", admin(fake))
    cb2 = await callback(fake, other, mark)
    assert cb2.json["data"]["flags"] & EPHEMERAL and "already running" in cb2.json["data"]["content"]
    assert "admin-bob" in cb2.json["data"]["content"] or "<@" in cb2.json["data"]["content"]
    # Another user's voice note is answered while the training runs.
    _, reply = await answer_to(fake, note)
    assert bot.get_cog("Admin").job is not None, "training ended before the voice note was answered"  # type: ignore[union-attr]
    final = await final_edit(fake, interaction, mark)
    assert reply.index < final.index
    progress = [e.json["content"] for e in edits(fake, interaction, mark) if e.index < final.index]
    assert progress and all(re.search(r"\[[#-]{20}\]\s+\d+%.*elapsed \d+ s", c, re.S) for c in progress)
    assert any("features" in c.lower() for c in progress) and any("Evaluating" in c for c in progress)
    times = [e.index for e in edits(fake, interaction, mark)]
    assert len(times) == len(set(times))
    text = final.json["content"]
    assert "new v2" in text and "active v1" in text and "Promoted" in text, text
    assert ModelRegistry(registry_dir).active_version == 2
    embed, _ = await answer_to(fake, note)
    want = await asyncio.to_thread(expected, registry_dir, 2, note)
    assert label_of(embed) == want.label and want.label in SUBSET


async def test_rollback_restores_previous_answers(fake: FakeDiscord, bot: SERBot, registry_dir: Path, note: bytes) -> None:
    mark = fake.mark()
    interaction = await slash(fake, "model", admin(fake), "rollback")
    cb = await callback(fake, interaction, mark)
    assert "v1 is now active" in cb.json["data"]["content"]
    assert ModelRegistry(registry_dir).active_version == 1
    embed, _ = await answer_to(fake, note)
    assert label_of(embed) == (await asyncio.to_thread(expected, registry_dir, 1, note)).label
    assert set(re.findall(r"^(\w+) ", next(f["value"] for f in embed["fields"] if f["name"] == "Other emotions")
                          .strip("`\n"), flags=re.M)) > set(SUBSET) - {label_of(embed)}  # 8-class answers again


async def test_forced_worse_model_is_not_promoted(fake: FakeDiscord, bot: SERBot, registry_dir: Path) -> None:
    cog: Any = bot.get_cog("Admin")
    cog.lifecycle.ser_retrain_corrupt_labels = True
    try:
        mark = fake.mark()
        interaction = await slash(fake, "retrain", admin(fake))
        final = await final_edit(fake, interaction, mark)
    finally:
        cog.lifecycle.ser_retrain_corrupt_labels = False
    text = final.json["content"]
    assert "Not promoted" in text and "v1 stays active" in text, text
    registry = ModelRegistry(registry_dir)
    assert registry.active_version == 1 and registry.version_numbers() == [1, 2, 3]
    assert registry.get(3).info["promoted"] is False
    new, ref = (registry.get(3).metadata["comparison"][k]["macro_f1"] for k in ("candidate", "reference"))
    assert new < ref - 0.02


async def test_killed_training_leaves_the_active_model(fake: FakeDiscord, bot: SERBot, registry_dir: Path, note: bytes) -> None:
    cog: Any = bot.get_cog("Admin")
    pointer = (registry_dir / "active.json").read_bytes()
    mark = fake.mark()
    interaction = await slash(fake, "retrain", admin(fake))
    await fake.wait_for_request("PATCH", r"/messages/@original$", timeout=60, since=mark,
                                where=lambda r: "[" in ((r.json or {}).get("content") or ""))  # fmt: skip
    job = cog.job
    assert job is not None and job.pid is not None
    await asyncio.to_thread(job.kill)
    final = await final_edit(fake, interaction, mark)
    assert "Training failed" in final.json["content"] and "unchanged" in final.json["content"]
    assert (registry_dir / "active.json").read_bytes() == pointer
    assert cog.job is None
    embed, _ = await answer_to(fake, note)
    assert label_of(embed) == (await asyncio.to_thread(expected, registry_dir, 1, note)).label


async def test_altered_bundle_is_refused_and_previous_stays_active(
    fake: FakeDiscord, bot: SERBot, registry_dir: Path, note: bytes
) -> None:
    registry = ModelRegistry(registry_dir)
    path = registry.get(2).path
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    mark = fake.mark()
    interaction = await slash(fake, "model", admin(fake), "activate", [p.option("version", 4, 2)])
    cb = await callback(fake, interaction, mark)
    content = cb.json["data"]["content"]
    assert cb.json["data"]["flags"] & EPHEMERAL and "v2" in content and "altered" in content and "v1 stays active" in content
    assert ModelRegistry(registry_dir).active_version == 1
    embed, _ = await answer_to(fake, note)
    assert label_of(embed) == (await asyncio.to_thread(expected, registry_dir, 1, note)).label
