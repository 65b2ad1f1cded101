"""Faults: a broken model at start, a full disk while saving a model, a gateway that drops
mid-burst, decoding or a worker thread raising unexpectedly, and a CDN that stalls, cuts a
body short or fails.

The bot runs for real over the fake Discord on loopback (see tests/test_bot_load.py
for the helpers); expected answers are the engine's own results on the very bytes
the bot downloads.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import re
import secrets
import shutil
import sys
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from bot.__main__ import EXIT_MODEL
from bot.config import Settings
from tests.fake_discord import FakeDiscord
from tests.test_bot_load import (
    VOICE_MESSAGE,
    Outcomes,
    bot_messages_by_reference,
    embed_label,
    model_file,
    running_bot,
    trimmed_clip,
)

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(__file__).resolve().parent / "data"
DOWNLOAD_TIMEOUT_S = 3.0  # the bot's SER_DOWNLOAD_TIMEOUT_S here
APOLOGY = re.compile(r"Sorry, something went wrong on my side\. \(error id `([0-9a-f]{8})`\)")


# ------------------------------------------------------------ model at start
def _bot_env(fake: FakeDiscord, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k.lower() not in Settings.model_fields}
    env.update(PYTHONPATH=str(ROOT), DISCORD_TOKEN=fake.token, DISCORD_API_BASE_URL=fake.base_url, **extra)
    return env


def _broken_model(kind: str, folder: Path) -> Path:
    """A copy of the configured bundle made ``kind``: missing, truncated, altered, or without its sidecar."""
    src = model_file()
    dst = folder / "model.joblib"
    if kind == "missing":
        return dst
    shutil.copyfile(src, dst)
    shutil.copyfile(src.with_suffix(".json"), dst.with_suffix(".json"))
    data = bytearray(dst.read_bytes())
    if kind == "truncated":
        dst.write_bytes(data[: len(data) // 2])
    elif kind == "altered":
        data[len(data) // 2] ^= 0xFF
        dst.write_bytes(bytes(data))
    elif kind == "no-sidecar":
        dst.with_suffix(".json").unlink()
    return dst


@pytest.mark.asyncio(loop_scope="function")
@pytest.mark.parametrize("kind", ["missing", "truncated", "altered", "no-sidecar"])
async def test_a_broken_model_stops_the_bot_with_exit_3_before_it_contacts_discord(kind: str, tmp_path: Path) -> None:
    model = _broken_model(kind, tmp_path)
    async with FakeDiscord(token="MTA5.model." + secrets.token_urlsafe(24)) as fake:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bot", cwd=tmp_path, env=_bot_env(fake, SER_MODEL_PATH=str(model)),
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        out, err = await asyncio.wait_for(proc.communicate(), 90)
        assert fake.requests == []  # not even the login: nothing reached Discord
    text = err.decode()
    assert proc.returncode == EXIT_MODEL == 3, text[-3000:]
    lines = text.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ser-bot: cannot load the model: "), text
    assert "Traceback" not in text and fake.token not in text + out.decode()


# ------------------------------------------------------------ disk full
def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _no_space(*_: Any) -> None:
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def test_disk_full_while_saving_a_model_leaves_the_active_model_untouched(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, voice_note_factory: Any
) -> None:
    from ser_engine.bundle import load_bundle, save_bundle
    from ser_engine.predict import Predictor
    from ser_engine.registry import ModelRegistry

    registry = ModelRegistry(tmp_path / "registry")
    assert registry.ensure_default(model_file()) == 1
    note = voice_note_factory(DATA / "03-01-05-02-01-01-01.flac").read_bytes()
    before = Predictor(registry.load_active()[1]).predict(note)
    bundle = load_bundle(model_file())
    files = _snapshot(registry.root)

    # A retrained model is registered while the disk is full (every fsync fails with ENOSPC).
    with monkeypatch.context() as m:
        m.setattr(os, "fsync", _no_space)
        with pytest.raises(OSError) as full:
            registry.register(bundle, source="retrain")
    assert full.value.errno == errno.ENOSPC and "No space left on device" in str(full.value)
    assert _snapshot(registry.root) == files  # no half-written version, no temporary file
    assert registry.version_numbers() == [1] and registry.active_version == 1

    # Activating a (complete) new version while the disk is full: the pointer stays where it was.
    v2 = registry.register(bundle, source="retrain").version
    files = _snapshot(registry.root)
    with monkeypatch.context() as m:
        m.setattr(os, "fsync", _no_space)
        with pytest.raises(OSError, match="No space left on device"):
            registry.activate(v2)
    assert _snapshot(registry.root) == files and registry.active_version == 1

    # Overwriting a bundle in place (ser train --output) while the disk is full: the old file stays whole.
    target = registry.root / "versions"
    active_file = next(p for p in target.rglob("*.joblib"))
    with monkeypatch.context() as m:
        m.setattr(os, "fsync", _no_space)
        with pytest.raises(OSError, match="No space left on device"):
            save_bundle(bundle, active_file)
    assert _snapshot(registry.root) == files

    version, served = registry.load_active()
    after = Predictor(served).predict(note)
    assert version == 1 and (after.label, after.probabilities) == (before.label, before.probabilities)


# ------------------------------------------------------------ the running bot
@pytest.fixture(scope="module")
def notes(tmp_path_factory: pytest.TempPathFactory, voice_note_factory: Any) -> list[bytes]:
    """Three short real voice notes; the third is the one the fault tests poison."""
    folder = tmp_path_factory.mktemp("fault-clips")
    names = ["03-01-05-02-01-01-01.flac", "03-01-04-02-01-01-03.flac", "03-01-03-02-02-01-02.flac"]
    return [voice_note_factory(trimmed_clip(DATA / n, folder / n)).read_bytes() for n in names]


@pytest.fixture(scope="module")
def expected(notes: list[bytes]) -> list[Any]:
    from ser_engine.predict import Predictor

    predictor = Predictor.load(model_file())
    return [predictor.predict(n) for n in notes]


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def env(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """(fake Discord with 4 channels and 20 members, the running bot)."""
    async with FakeDiscord(token="MTA5.faults." + secrets.token_urlsafe(24)) as fake:
        channels = [fake.channel] + [await fake.add_text_channel(f"room-{i}") for i in range(1, 4)]
        members = [fake.human_member] + [fake.add_member(f"user{i:02d}") for i in range(1, 20)]
        async with running_bot(
            fake,
            tmp_path_factory.mktemp("fault-data"),
            tmp_path_factory.mktemp("fault-registry"),
            ser_workers=2,
            ser_worker_mode="thread",  # the faults below are injected by monkeypatching code of this process
            ser_max_pending=64,
            ser_request_timeout_s=60,
            ser_user_max_notes=50,
            ser_channel_replies_per_s=50,
            ser_download_timeout_s=DOWNLOAD_TIMEOUT_S,
            ser_max_downloads=2,
        ) as bot:
            yield fake, bot, channels, members


async def _send_notes(
    fake: FakeDiscord, channels: list[dict[str, Any]], members: list[dict[str, Any]], clips: list[bytes], first: int = 0
) -> list[dict[str, Any]]:
    sent = []
    for i, clip in enumerate(clips, start=first):
        note = fake.add_attachment(clip, "voice-message.ogg", "audio/ogg", voice_message=True, duration_s=1.2)
        sent.append(
            await fake.send_message(
                attachments=[note], flags=VOICE_MESSAGE, channel=channels[i % len(channels)], member=members[i % len(members)]
            )
        )
    return sent


@pytest.mark.asyncio(loop_scope="module")
async def test_gateway_drop_mid_burst_resumes_and_answers_every_note_once(
    env: Any, notes: list[bytes], expected: list[Any]
) -> None:
    fake, bot, channels, members = env
    identifies = len(fake.identifies)
    resumed = asyncio.Event()

    async def on_resumed() -> None:
        resumed.set()

    bot.add_listener(on_resumed)
    order = [i % 3 for i in range(40)]
    try:
        with Outcomes(bot) as outcomes:
            before = await _send_notes(fake, channels, members, [notes[i] for i in order[:20]])
            await fake.drop_gateway(code=4000)
            done_at_drop = len(outcomes.items)
            await asyncio.wait_for(resumed.wait(), 20)
            after = await _send_notes(fake, channels, members, [notes[i] for i in order[20:]], first=20)
            await outcomes.wait(40, timeout=90)
            await asyncio.sleep(0.5)  # a duplicate answer would show up now
    finally:
        bot.remove_listener(on_resumed)

    assert done_at_drop < 20, "the gateway should drop while notes of the burst are still being analysed"
    assert len(fake.identifies) == identifies  # RESUMED the session, no new IDENTIFY
    assert sorted(o.message_id for o in outcomes.items) == sorted(int(m["id"]) for m in before + after)
    replies = bot_messages_by_reference(fake)
    for msg, clip in zip(before + after, order):
        (reply,) = replies[msg["id"]]  # exactly one answer per note
        label, confidence = embed_label(reply["embeds"][0])
        assert label == expected[clip].label and confidence == pytest.approx(expected[clip].confidence, abs=6e-4)


class _Collector(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.lines: list[str] = []
        self.setFormatter(logging.Formatter("%(name)s %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


@pytest.mark.asyncio(loop_scope="module")
@pytest.mark.parametrize("where", ["decoding", "worker"])
async def test_an_unexpected_error_apologises_to_that_user_only(
    env: Any, notes: list[bytes], expected: list[Any], monkeypatch: pytest.MonkeyPatch, where: str
) -> None:
    import ser_engine.predict as predict_module
    import ser_engine.timeline as timeline_module

    fake, bot, channels, members = env
    poison = notes[2]
    service = bot.service
    assert service is not None
    if where == "decoding":  # the decoder breaks in the worker thread on this file's bytes
        real_load = predict_module.load_audio

        def load_audio(source: Any, *args: Any, **kwargs: Any) -> Any:
            if source == poison:
                raise ValueError("corrupt frame header (injected)")
            return real_load(source, *args, **kwargs)

        monkeypatch.setattr(predict_module, "load_audio", load_audio)
        monkeypatch.setattr(timeline_module, "load_audio", load_audio)  # the bot's path (timelines on)
        restore = None
    else:  # the worker thread itself dies with an unexpected error

        class Exploding:
            def __init__(self, inner: Any) -> None:
                self.inner = inner

            def predict(self, source: Any, *args: Any, **kwargs: Any) -> Any:
                if source == poison:
                    raise RuntimeError("worker crashed (injected)")
                return self.inner.predict(source, *args, **kwargs)

            def predict_timeline(self, source: Any, *args: Any, **kwargs: Any) -> Any:  # the bot's path
                if source == poison:
                    raise RuntimeError("worker crashed (injected)")
                return self.inner.predict_timeline(source, *args, **kwargs)

            def __getattr__(self, name: str) -> Any:
                return getattr(self.inner, name)

        restore = service.swap_predictor(Exploding(service.predictor))  # type: ignore[arg-type]
    logs = _Collector()
    logging.getLogger().addHandler(logs)
    order = [0, 1, 2, 0, 1, 0, 2, 1, 0, 1, 2, 0]  # three poisoned notes among nine good ones, one burst
    try:
        with Outcomes(bot) as outcomes:
            sent = await _send_notes(fake, channels, members, [notes[i] for i in order], first=100)
            await outcomes.wait(len(sent), timeout=60)
    finally:
        logging.getLogger().removeHandler(logs)
        if restore is not None:
            service.swap_predictor(restore)

    replies = bot_messages_by_reference(fake)
    cids = []
    for msg, clip in zip(sent, order):
        (reply,) = replies[msg["id"]]
        if clip == 2:
            match = APOLOGY.fullmatch(reply["content"])
            assert match and not reply.get("embeds"), reply
            assert "injected" not in reply["content"]
            cids.append(match.group(1))
        else:
            label, confidence = embed_label(reply["embeds"][0])
            assert label == expected[clip].label and confidence == pytest.approx(expected[clip].confidence, abs=6e-4)
    assert len(set(cids)) == 3  # one correlation id per failure
    for cid in cids:
        (line,) = [line for line in logs.lines if cid in line]
        assert "Traceback" in line and "(injected)" in line and ("ValueError" if where == "decoding" else "RuntimeError") in line
    statuses = {o.message_id: o.status for o in outcomes.items}
    assert [statuses[int(m["id"])] for m in sent] == ["refused" if c == 2 else "answered" for c in order]


@pytest.mark.asyncio(loop_scope="module")
async def test_a_stalled_short_or_failing_download_gets_a_short_answer_and_frees_its_slot(
    env: Any, notes: list[bytes], expected: list[Any]
) -> None:
    from bot.cogs.emotion.media import DownloadError, DownloadTimeoutError

    fake, bot, channels, members = env
    cog: Any = bot.get_cog("Emotion")
    # Two stalls hold both download slots (SER_MAX_DOWNLOADS=2); the cut-short and failing ones wait behind them.
    modes = ["stall", "stall", "short", "error"]
    sent = []
    with Outcomes(bot) as outcomes:
        for i, mode in enumerate(modes):
            # "short": Discord and the CDN both announce twice the body, then half of it comes.
            declared = 2 * len(notes[0]) if mode == "short" else None
            note = fake.add_attachment(
                notes[0], "voice-message.ogg", "audio/ogg", voice_message=True, duration_s=1.2, size=declared
            )
            fake.craft_download(note, mode)
            sent.append(await fake.send_message(
                attachments=[note], flags=VOICE_MESSAGE, channel=channels[i], member=members[10 + i]
            ))  # fmt: skip
        await outcomes.wait(len(modes), timeout=4 * DOWNLOAD_TIMEOUT_S + 10)
    assert [o.status for o in outcomes.items] == ["refused"] * len(modes)
    replies = bot_messages_by_reference(fake)
    texts = [replies[m["id"]][0]["content"] for m in sent]
    assert texts == [DownloadTimeoutError().user_message] * 2 + [DownloadError().user_message] * 2
    assert cog.downloader.in_flight == 0 and cog.downloader.running == 0

    # Every slot is free again: the next notes are downloaded and answered.
    with Outcomes(bot) as outcomes:
        after = await _send_notes(fake, channels, members, notes[:2], first=300)
        await outcomes.wait(2, timeout=60)
    replies = bot_messages_by_reference(fake)
    for msg, clip in zip(after, (0, 1)):
        (reply,) = replies[msg["id"]]
        label, confidence = embed_label(reply["embeds"][0])
        assert label == expected[clip].label and confidence == pytest.approx(expected[clip].confidence, abs=6e-4)
