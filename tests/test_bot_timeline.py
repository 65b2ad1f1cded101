"""End to end: a long voice note gets its emotions over time (issue 16), from the real bot over the fake Discord.

The running-bot fixtures are those of ``tests/test_bot_e2e.py`` (one bot and one fake Discord for this
module).  Expected timelines are computed by the engine on the very bytes the bot downloads.
"""

from __future__ import annotations

import asyncio
import io
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf

from bot.cogs.emotion.timeline import FILENAME, alt_text
from bot.insights import EMOTION_COLOURS
from ser_engine.audio import load_audio
from ser_engine.timeline import predict_timeline
from ser_engine.vad import default_detector
from tests import test_bot_e2e as e2e
from tests.test_bot_e2e import VOICE_MESSAGE, callback_of, messages_path, webhook_path

pytestmark = pytest.mark.asyncio(loop_scope="module")
# The running bot and the fake Discord of tests/test_bot_e2e.py (module-scoped: their own instances here).
fake = e2e.fake
bot = e2e.bot
SR = 16_000


def _speech(path: Path) -> np.ndarray:
    y = load_audio(path)
    segs = default_detector().speech_segments(y)
    return y[max(0, int((segs[0][0] - 0.1) * SR)) : int((segs[-1][1] + 0.1) * SR)]


@pytest.fixture(scope="module")
def long_note(ravdess_dir: Path, voice_note_factory: Any, tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """About 20 s of Actor 01: four angry (strong) clips, then four calm ones, as a Discord voice note."""
    actor = ravdess_dir / "Actor_01"
    clips = sorted(actor.glob("03-01-05-02-*.flac"))[:4] + sorted(actor.glob("03-01-02-02-*.flac"))[:4]
    rng = np.random.default_rng(0)
    parts: list[np.ndarray] = []
    for k, clip in enumerate(clips):
        parts += [_speech(clip), (rng.standard_normal(int((0.6 if k == 3 else 0.25) * SR)) * 1e-3).astype(np.float32)]
    y = np.concatenate(parts)
    assert 18 <= y.size / SR <= 24
    src = tmp_path_factory.mktemp("long-note") / "long-note.flac"
    sf.write(src, y, SR)
    return voice_note_factory(src).read_bytes()  # type: ignore[no-any-return]


def _check_strip(png: bytes, timeline: Any) -> None:
    """The PNG is the strip: 640 x 40, each segment's middle drawn in its emotion's colour."""
    from PIL import Image

    image = Image.open(io.BytesIO(png)).convert("RGB")
    assert image.size == (640, 40)
    pixels = np.asarray(image)
    for seg in timeline.segments:
        x = int((seg.start_s + seg.end_s) / 2 / timeline.duration_s * 640)
        colour = EMOTION_COLOURS[seg.label].lstrip("#")
        assert tuple(pixels[10, x]) == tuple(int(colour[i : i + 2], 16) for i in (0, 2, 4)), seg


async def test_a_20_s_voice_note_gets_the_timeline_line_and_image(fake: Any, bot: Any, predictor: Any,
                                                                  long_note: bytes) -> None:  # fmt: skip
    expected = await asyncio.to_thread(predict_timeline, predictor, long_note)
    assert expected.is_cut and {"angry", "calm"} <= {s.label for s in expected.segments}
    note = fake.add_attachment(long_note, "voice-message.ogg", "audio/ogg", voice_message=True,
                               duration_s=expected.duration_s)  # fmt: skip
    mark = fake.mark()
    await fake.send_message(attachments=[note], flags=VOICE_MESSAGE)
    reply = await fake.wait_for_request("POST", messages_path(fake), timeout=60, since=mark)

    embed = reply.json["embeds"][0]
    assert re.search(rf"\*\*{expected.overall.label}\*\*", embed["description"])  # the overall emotion stays
    fields = {f["name"]: f["value"] for f in embed["fields"]}
    assert fields["Over time"] == expected.summary()
    assert fields["Over time"].startswith("mostly ") and " from 0:" in fields["Over time"]
    assert embed["image"]["url"] == f"attachment://{FILENAME}"
    assert reply.files == [FILENAME]
    attachment = reply.json["attachments"][0]
    assert attachment["filename"] == FILENAME
    assert attachment["description"] == alt_text(expected)
    assert "angry" in attachment["description"] and "calm" in attachment["description"]
    _check_strip(reply.uploads[0].data, expected)


async def test_a_short_voice_note_gets_no_timeline(fake: Any, bot: Any, angry_note: bytes) -> None:
    note = fake.add_attachment(angry_note, "voice-message.ogg", "audio/ogg", voice_message=True, duration_s=4.0)
    mark = fake.mark()
    await fake.send_message(attachments=[note], flags=VOICE_MESSAGE)
    reply = await fake.wait_for_request("POST", messages_path(fake), timeout=60, since=mark)
    assert "Over time" not in {f["name"] for f in reply.json["embeds"][0]["fields"]}
    assert not reply.files and "image" not in reply.json["embeds"][0]


async def test_slash_command_shows_the_same_timeline(fake: Any, bot: Any, predictor: Any, long_note: bytes) -> None:
    expected = await asyncio.to_thread(predict_timeline, predictor, long_note)
    audio = fake.add_attachment(long_note, "long.ogg", "audio/ogg")
    mark = fake.mark()
    interaction = await fake.invoke_slash("emotion", [{"name": "audio", "type": 11, "value": audio["id"]}],
                                          {"attachments": {audio["id"]: audio}})  # fmt: skip
    await callback_of(fake, interaction, mark)
    edit = await fake.wait_for_request("PATCH", webhook_path(fake, interaction, "/messages/@original"), 60, since=mark)
    embed = edit.json["embeds"][0]
    assert {f["name"]: f["value"] for f in embed["fields"]}["Over time"] == expected.summary()
    assert edit.files == [FILENAME]
    _check_strip(edit.uploads[0].data, expected)
