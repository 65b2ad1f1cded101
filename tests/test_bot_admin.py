"""Model life cycle over the fake Discord: who may use it, /retrain, the quality gate, /model rollback and activate.

One bot serves the module (tests run in order and build on each other's
registry state), with ``SER_ADMIN_GUILD_ID`` set to the fake's guild (the
operators' server); a second server holds a member with Manage Server and
Administrator there, who must not be able to touch the model.  Alice, the
fake application's owner, is an operator without any server permission.
Training uses a small RAVDESS subset (4 actors x 4 emotions, 128 clips) so
each run takes seconds.  Expected answers are computed by the engine on the
bytes the bot downloads, from the very registry versions the bot should serve.
"""

from __future__ import annotations

import asyncio
import logging
import re
import secrets
from dataclasses import dataclass
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
from tests._consent import allow_analysis
from tests.fake_discord import FakeDiscord
from tests.fake_discord import payloads as p

pytestmark = pytest.mark.asyncio(loop_scope="module")

ROOT = Path(__file__).resolve().parents[1]
EPHEMERAL = 64
VOICE_MESSAGE = 8192
SUBSET = ["calm", "happy", "sad", "angry"]
MANAGER = p.MEMBER_PERMISSIONS | p.MANAGE_GUILD
ERROR_ID = re.compile(r"error id `[0-9a-f]{8}`")


@dataclass
class Cast:
    """Who uses the commands, and where."""

    owner: dict[str, Any]  # alice: the application's owner, no server permission
    managers: list[dict[str, Any]]  # Manage Server in the admin server
    member: dict[str, Any]  # an ordinary member of the admin server
    other_guild: dict[str, Any]  # a second server
    intruder: dict[str, Any]  # Manage Server and Administrator in the second server


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def fake() -> Any:
    async with FakeDiscord(token="MTA5.fake." + secrets.token_urlsafe(24)) as server:
        yield server


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def cast(fake: FakeDiscord) -> Cast:
    other = await fake.add_guild("Someone else's server")
    intruder = await fake.add_guild_member(other, "mallory", permissions=MANAGER | p.ADMINISTRATOR)
    managers = [fake.add_member(name, permissions=MANAGER) for name in ("admin-bob", "admin-carl")]
    return Cast(fake.human_member, managers, fake.add_member("dave"), other, intruder)


@pytest.fixture(scope="module")
def registry_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("registry")


async def run_bot(fake: FakeDiscord, settings: Settings, lifecycle: LifecycleSettings) -> Any:
    """Start the bot on ``fake`` (async generator: yields it ready, closes it)."""
    client = SERBot(settings, lifecycle=lifecycle, guild_ready_timeout=0.2)
    runner = asyncio.create_task(client.start(settings.discord_token.get_secret_value()))
    ready = asyncio.create_task(client.wait_until_ready())
    try:
        done, _ = await asyncio.wait({runner, ready}, timeout=90, return_when=asyncio.FIRST_COMPLETED)
        if runner in done:
            runner.result()
        assert ready in done
        await allow_analysis(client, fake.guild_id)  # consent first: off until a manager turns it on
        yield client
    finally:
        ready.cancel()
        await client.close()
        await asyncio.wait_for(runner, 30)
        restore_defaults()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def bot(fake: FakeDiscord, cast: Cast, ravdess_dir: Path, registry_dir: Path,
              tmp_path_factory: pytest.TempPathFactory) -> Any:  # fmt: skip
    data = tmp_path_factory.mktemp("botdata")
    settings = Settings(_env_file=None, discord_token=fake.token, discord_api_base_url=fake.base_url,
                        ser_model_path=ROOT / DEFAULT_MODEL_PATH, ser_workers=2, data_dir=data,
                        ser_admin_guild_id=fake.guild_id, ser_owner_ids="")  # fmt: skip
    lifecycle = LifecycleSettings(
        _env_file=None, ser_registry_dir=registry_dir, ser_corpus_dirs=str(ravdess_dir),
        ser_feature_cache_dir=data / "cache", ser_retrain_emotions=",".join(SUBSET),
        ser_retrain_speakers="01,02,03,04", ser_retrain_folds=4, ser_retrain_max_iter=200, ser_promote_margin=0.02,
    )  # fmt: skip
    async for client in run_bot(fake, settings, lifecycle):
        yield client


@pytest.fixture(scope="module")
def note(voice_note_factory: Any, angry_clip: Path) -> bytes:
    return voice_note_factory(angry_clip).read_bytes()


def admin(cast: Cast, i: int = 0) -> dict[str, Any]:
    return cast.managers[i]


async def slash(fake: FakeDiscord, name: str, invoker: dict[str, Any], sub: str | None = None,
                options: list[dict[str, Any]] | None = None, *, guild: dict[str, Any] | None = None,
                scope: str | None = "admin") -> dict[str, Any]:  # fmt: skip
    """Use ``/name [sub]`` as ``invoker`` in ``guild`` (default: the admin server's general channel).

    ``scope`` names where the command is registered: ``"admin"`` (the admin
    server, where the operators' commands are) or ``None`` (globally).
    """
    opts = [p.subcommand(sub, options or [])] if sub else (options or [])
    command = fake.command_in(name, fake.guild_id if scope == "admin" else None)
    where = guild or fake.guild
    channel = where["channels"][0]
    return await fake.invoke_command_in(command, guild_id=where["id"], channel=channel, invoker=invoker, options=opts)


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


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` with its bytes."""
    return {str(f.relative_to(folder)): f.read_bytes() for f in sorted(folder.rglob("*")) if f.is_file()}


def subcommands(command: dict[str, Any]) -> set[str]:
    return {o["name"] for o in command.get("options", [])}


# --------------------------------------------------------------------- tests
async def test_operator_commands_are_registered_in_the_admin_server_only(fake: FakeDiscord, bot: SERBot) -> None:
    public = fake.command_in("model", None)
    assert subcommands(public) == {"info", "list"} and public["default_member_permissions"] is None
    with pytest.raises(KeyError):
        fake.command_in("retrain", None)
    retrain, ops = fake.command_in("retrain", fake.guild_id), fake.command_in("model", fake.guild_id)
    assert subcommands(ops) == {"activate", "rollback"}
    for command in (retrain, ops):
        assert int(command["default_member_permissions"]) == p.MANAGE_GUILD  # hidden from other members
    assert set(fake.commands) == {None, fake.guild_id}  # nothing in the second server
    activate = next(o for o in ops["options"] if o["name"] == "activate")
    assert {o["name"] for o in activate["options"]} == {"version", "force"}


async def test_registry_adopts_the_shipped_model_and_serves_it(
    fake: FakeDiscord, bot: SERBot, registry_dir: Path, note: bytes
) -> None:
    registry = ModelRegistry(registry_dir)
    assert registry.version_numbers() == [1] and registry.active_version == 1
    assert registry.get(1).sha256 == ModelRegistry(registry_dir).get(1).sha256
    embed, _ = await answer_to(fake, note)
    assert label_of(embed) == (await asyncio.to_thread(expected, registry_dir, 1, note)).label


async def test_model_info_is_public(fake: FakeDiscord, bot: SERBot, cast: Cast) -> None:
    for who, where in ((cast.member, None), (cast.intruder, cast.other_guild)):
        mark = fake.mark()
        interaction = await slash(fake, "model", who, "info", guild=where, scope=None)
        cb = await callback(fake, interaction, mark)
        assert cb.json["data"]["flags"] & EPHEMERAL and cb.json["data"]["content"].startswith("Active model: **"), cb.json


async def test_retrain_starts_once_for_two_requests_at_once_answers_meanwhile_and_promotes(
    fake: FakeDiscord, bot: SERBot, cast: Cast, registry_dir: Path, note: bytes
) -> None:
    mark = fake.mark()
    # Two managers of the admin server send /retrain at the same moment: one training starts.
    first, second = await asyncio.gather(slash(fake, "retrain", admin(cast, 0)), slash(fake, "retrain", admin(cast, 1)))
    answers = {i["id"]: (await callback(fake, i, mark)).json for i in (first, second)}
    started = [i for i in (first, second) if not (answers[i["id"]]["data"].get("flags") or 0) & EPHEMERAL]
    refused = [i for i in (first, second) if (answers[i["id"]]["data"].get("flags") or 0) & EPHEMERAL]
    assert len(started) == 1 and len(refused) == 1, answers
    (interaction,), (other,) = started, refused
    assert answers[interaction["id"]]["type"] == 4
    assert answers[interaction["id"]]["data"]["content"].startswith("Training started by <@")
    text = answers[other["id"]]["data"]["content"]
    assert "already running" in text and f"<@{interaction['member']['user']['id']}>" in text
    # Another user's voice note is answered while the training runs.
    _, reply = await answer_to(fake, note)
    assert bot.get_cog("Admin").job is not None, "training ended before the voice note was answered"  # type: ignore[union-attr]
    final = await final_edit(fake, interaction, mark)
    assert reply.index < final.index
    assert not edits(fake, other, mark)  # the refused request never showed progress
    progress = [e.json["content"] for e in edits(fake, interaction, mark) if e.index < final.index]
    assert progress and all(re.search(r"\[[#-]{20}\]\s+\d+%.*elapsed \d+ s", c, re.S) for c in progress)
    assert any("features" in c.lower() for c in progress) and any("Evaluating" in c for c in progress)
    times = [e.index for e in edits(fake, interaction, mark)]
    assert len(times) == len(set(times))
    text = final.json["content"]
    assert "new v2" in text and "active v1" in text and "Promoted" in text, text
    registry = ModelRegistry(registry_dir)
    assert registry.active_version == 2 and registry.version_numbers() == [1, 2]  # one training, one version
    embed, _ = await answer_to(fake, note)
    want = await asyncio.to_thread(expected, registry_dir, 2, note)
    assert label_of(embed) == want.label and want.label in SUBSET


async def test_non_operators_are_refused_and_the_registry_is_untouched(
    fake: FakeDiscord, bot: SERBot, cast: Cast, registry_dir: Path
) -> None:
    """Manage Server (even Administrator) in a second server, or no permission in the admin server: refused."""
    before = snapshot(registry_dir)
    assert ModelRegistry(registry_dir).pointer()["history"] == [1]  # a rollback or an activation would change it
    cog: Any = bot.get_cog("Admin")
    for who, where in ((cast.intruder, cast.other_guild), (cast.member, None)):
        for name, sub, opts in (("retrain", None, None), ("model", "rollback", None),
                                ("model", "activate", [p.option("version", 4, 1)]),
                                ("model", "activate", [p.option("version", 4, 1), p.option("force", 5, True)])):  # fmt: skip
            mark = fake.mark()
            interaction = await slash(fake, name, who, sub, opts, guild=where)
            cb = await callback(fake, interaction, mark)
            assert cb.json["type"] == 4 and cb.json["data"]["flags"] & EPHEMERAL
            assert cb.json["data"]["content"] == NOT_ALLOWED
            assert cog.job is None
    assert snapshot(registry_dir) == before  # byte-identical: nothing was activated, rolled back or trained
    assert cog.active_version == 2


async def test_the_application_owner_rolls_back(
    fake: FakeDiscord, bot: SERBot, cast: Cast, registry_dir: Path, note: bytes
) -> None:
    """Alice owns the application (GET /oauth2/applications/@me) and holds no server permission."""
    mark = fake.mark()
    interaction = await slash(fake, "model", cast.owner, "rollback")
    cb = await callback(fake, interaction, mark)
    assert "v1 is now active" in cb.json["data"]["content"]
    assert ModelRegistry(registry_dir).active_version == 1
    embed, _ = await answer_to(fake, note)
    assert label_of(embed) == (await asyncio.to_thread(expected, registry_dir, 1, note)).label
    assert set(re.findall(r"^(\w+) ", next(f["value"] for f in embed["fields"] if f["name"] == "Other emotions")
                          .strip("`\n"), flags=re.M)) > set(SUBSET) - {label_of(embed)}  # 8-class answers again


async def test_forced_worse_model_is_not_promoted_nor_activated_without_an_owner(
    fake: FakeDiscord, bot: SERBot, cast: Cast, registry_dir: Path
) -> None:
    cog: Any = bot.get_cog("Admin")
    cog.lifecycle.ser_retrain_corrupt_labels = True
    try:
        mark = fake.mark()
        interaction = await slash(fake, "retrain", admin(cast))
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

    # The gate's verdict holds: a manager cannot activate v3, not even with force; only an owner can force it.
    before = snapshot(registry_dir)
    for options, says in (([p.option("version", 4, 3)], "rejected by the quality gate"),
                          ([p.option("version", 4, 3), p.option("force", 5, True)], "Only the bot's owners")):  # fmt: skip
        mark = fake.mark()
        cb = await callback(fake, await slash(fake, "model", admin(cast), "activate", options), mark)
        assert cb.json["data"]["flags"] & EPHEMERAL and says in cb.json["data"]["content"], cb.json
        assert "v1 stays active" in cb.json["data"]["content"]
    assert snapshot(registry_dir) == before
    mark = fake.mark()
    options = [p.option("version", 4, 3), p.option("force", 5, True)]
    cb = await callback(fake, await slash(fake, "model", cast.owner, "activate", options), mark)
    assert "v3 is now active" in cb.json["data"]["content"] and ModelRegistry(registry_dir).active_version == 3
    mark = fake.mark()
    cb = await callback(fake, await slash(fake, "model", admin(cast), "rollback"), mark)
    assert "v1 is now active" in cb.json["data"]["content"] and ModelRegistry(registry_dir).active_version == 1


async def test_killed_training_leaves_the_active_model_and_shows_only_an_error_id(
    fake: FakeDiscord, bot: SERBot, cast: Cast, registry_dir: Path, note: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    cog: Any = bot.get_cog("Admin")
    pointer = (registry_dir / "active.json").read_bytes()
    mark = fake.mark()
    with caplog.at_level(logging.ERROR, logger="bot.cogs.admin.cog"):
        interaction = await slash(fake, "retrain", admin(cast))
        await fake.wait_for_request("PATCH", r"/messages/@original$", timeout=60, since=mark,
                                    where=lambda r: "[" in ((r.json or {}).get("content") or ""))  # fmt: skip
        job = cog.job
        assert job is not None and job.pid is not None
        await asyncio.to_thread(job.kill)
        final = await final_edit(fake, interaction, mark)
    text = final.json["content"]
    assert "Training failed" in text and "unchanged" in text
    found = ERROR_ID.search(text)
    assert found, text
    assert job.error and job.error not in text and "exit code" not in text  # the child's error text stays in the log
    cid = found.group(0).split("`")[1]
    assert any(cid in r.getMessage() and job.error in r.getMessage() for r in caplog.records), caplog.text
    assert (registry_dir / "active.json").read_bytes() == pointer
    assert cog.job is None
    embed, _ = await answer_to(fake, note)
    assert label_of(embed) == (await asyncio.to_thread(expected, registry_dir, 1, note)).label


async def test_altered_bundle_is_refused_and_previous_stays_active(
    fake: FakeDiscord, bot: SERBot, cast: Cast, registry_dir: Path, note: bytes
) -> None:
    registry = ModelRegistry(registry_dir)
    path = registry.get(2).path
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    mark = fake.mark()
    interaction = await slash(fake, "model", admin(cast), "activate", [p.option("version", 4, 2)])
    cb = await callback(fake, interaction, mark)
    content = cb.json["data"]["content"]
    assert cb.json["data"]["flags"] & EPHEMERAL and "v2" in content and "altered" in content and "v1 stays active" in content
    assert ModelRegistry(registry_dir).active_version == 1
    embed, _ = await answer_to(fake, note)
    assert label_of(embed) == (await asyncio.to_thread(expected, registry_dir, 1, note)).label


async def test_without_an_admin_server_only_owners_may_and_the_commands_are_hidden(
    note: bytes, tmp_path: Path
) -> None:
    """No SER_ADMIN_GUILD_ID: global commands behind Manage Server; Manage Server anywhere is not enough."""
    async with FakeDiscord(token="MTA5.noadmin." + secrets.token_urlsafe(24)) as fake:
        boss = fake.add_member("boss", permissions=MANAGER | p.ADMINISTRATOR)
        operator = fake.add_member("operator")  # listed in SER_OWNER_IDS, no server permission
        settings = Settings(_env_file=None, discord_token=fake.token, discord_api_base_url=fake.base_url,
                            ser_model_path=ROOT / DEFAULT_MODEL_PATH, ser_workers=1, ser_worker_mode="thread",
                            data_dir=tmp_path, ser_owner_ids=operator["user"]["id"])  # fmt: skip
        lifecycle = LifecycleSettings(_env_file=None, ser_registry_dir=tmp_path / "registry")
        async for _client in run_bot(fake, settings, lifecycle):
            assert set(fake.commands) == {None}
            model, retrain = fake.command_in("model", None), fake.command_in("retrain", None)
            assert subcommands(model) == {"info", "list", "activate", "rollback"}
            for command in (model, retrain):
                assert int(command["default_member_permissions"]) == p.MANAGE_GUILD and command["dm_permission"] is False
            before = snapshot(tmp_path / "registry")
            for name, sub, opts in (("retrain", None, None), ("model", "activate", [p.option("version", 4, 1)])):
                mark = fake.mark()
                cb = await callback(fake, await slash(fake, name, boss, sub, opts, scope=None), mark)
                assert cb.json["data"]["content"] == NOT_ALLOWED and cb.json["data"]["flags"] & EPHEMERAL
            assert snapshot(tmp_path / "registry") == before
            mark = fake.mark()
            cb = await callback(fake, await slash(fake, "model", operator, "activate", [p.option("version", 4, 1)],
                                                  scope=None), mark)  # fmt: skip
            assert cb.json["data"]["content"] == "v1 is now active."


async def test_operator_settings_are_validated() -> None:
    from pydantic import ValidationError

    settings = Settings(_env_file=None, discord_token="x", ser_owner_ids=" 123, 456 ,", ser_admin_guild_id=" ")
    assert settings.owner_ids == frozenset({123, 456}) and settings.ser_admin_guild_id is None
    assert Settings(_env_file=None, discord_token="x").owner_ids == frozenset()
    with pytest.raises(ValidationError, match="SER_OWNER_IDS"):
        Settings(_env_file=None, discord_token="x", ser_owner_ids="123,alice")  # a typo is not silently dropped
