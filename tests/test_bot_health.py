"""Health, readiness and metrics (issue 14, point 4): the real bot with ``SER_HTTP_PORT``, over the fake Discord.

The bot serves ``/healthz``, ``/readyz`` and ``/metrics`` from its own event
loop; the test reads them over HTTP as Prometheus or a container runtime
would, while voice notes go through the fake Discord.
"""

from __future__ import annotations

import asyncio
import math
import secrets
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
from prometheus_client.parser import text_string_to_metric_families

from bot.client import SERBot
from bot.config import Settings
from bot.discord_api import restore_defaults
from tests._consent import allow_analysis
from tests.fake_discord import FakeDiscord
from tests.test_bot_e2e import VOICE_MESSAGE, Outcomes

pytestmark = pytest.mark.asyncio(loop_scope="module")


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def fake() -> Any:
    async with FakeDiscord(token="MTA5.health." + secrets.token_urlsafe(24)) as server:
        yield server


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def bot(fake: FakeDiscord, model_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Any:
    settings = Settings(
        _env_file=None, discord_token=fake.token, discord_api_base_url=fake.base_url,
        data_dir=tmp_path_factory.mktemp("health-data"), ser_model_path=model_path, ser_workers=1,
        ser_worker_mode="process", ser_http_port=0,
    )  # fmt: skip
    client = SERBot(settings, guild_ready_timeout=0.2)
    runner = asyncio.create_task(client.start(settings.discord_token.get_secret_value()))
    ready = asyncio.create_task(client.wait_until_ready())
    try:
        done, _ = await asyncio.wait({runner, ready}, timeout=90, return_when=asyncio.FIRST_COMPLETED)
        if runner in done:
            runner.result()
        assert ready in done, "the bot did not become ready within 90 s"
        await allow_analysis(client, fake.guild_id)
        yield client
    finally:
        ready.cancel()
        await client.close()
        await asyncio.wait_for(runner, 30)
        restore_defaults()


async def get(bot: SERBot, path: str) -> tuple[int, str]:
    assert bot.health is not None and bot.health.port > 0
    async with aiohttp.ClientSession() as session:
        async with session.get(f"http://127.0.0.1:{bot.health.port}{path}") as response:
            return response.status, await response.text()


async def metrics(bot: SERBot) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    status, text = await get(bot, "/metrics")
    assert status == 200
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}  # fmt: skip


def value(snapshot: dict, name: str, **labels: str) -> float:
    return snapshot.get((name, tuple(sorted(labels.items()))), 0.0)


async def post_note(fake: FakeDiscord, bot: SERBot, audio: bytes) -> Any:
    note = fake.add_attachment(audio, "voice-message.ogg", "audio/ogg", voice_message=True, duration_s=4.0)
    with Outcomes(bot) as outcomes:
        msg = await fake.send_message(attachments=[note], flags=VOICE_MESSAGE)
        return await outcomes.of(msg)


async def test_healthz_and_readyz_are_200_while_connected_with_live_workers(bot: SERBot) -> None:
    status, body = await get(bot, "/healthz")
    assert status == 200, body
    assert '"gateway": true' in body and '"workers": 1' in body
    status, body = await get(bot, "/readyz")
    assert status == 200 and '"database": true' in body


async def test_metrics_count_two_answered_notes_and_one_refused(
    fake: FakeDiscord, bot: SERBot, angry_note: bytes
) -> None:
    before = await metrics(bot)
    outcomes = [await post_note(fake, bot, angry_note) for _ in range(2)]
    refused = await post_note(fake, bot, b"OggS" + secrets.token_bytes(3000))  # not a decodable recording
    assert [o.status for o in outcomes] == ["answered", "answered"]
    assert refused.status == "refused" and refused.reason not in (None, "error")
    after = await metrics(bot)

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert delta("ser_voice_notes_total", outcome="answered", reason="") == 2
    assert delta("ser_voice_notes_total", outcome="refused", reason=refused.reason) == 1
    assert delta("ser_voice_notes_total", outcome="failed", reason="error") == 0
    assert delta("ser_analysis_seconds_count") == 2  # the refused note failed inside the service: not timed
    assert 0 < delta("ser_analysis_seconds_sum") < 60
    assert value(after, "ser_queue_depth") == 0
    assert value(after, "ser_live_workers") == 1
    assert value(after, "ser_model_info", version=bot.service.model_version) == 1
    latency = value(after, "ser_gateway_latency_seconds")  # NaN until the first heartbeat is acknowledged
    assert math.isnan(latency) or latency >= 0
    assert value(after, "ser_gateway_connected") == 1
    assert value(after, "ser_database_errors_total") == 0


async def test_healthz_is_503_after_the_analysis_service_closes(bot: SERBot) -> None:
    # Last test of the module: the service is closed as at shutdown (a crashed service looks the same).
    assert bot.service is not None
    await bot.service.close()
    status, body = await get(bot, "/healthz")
    assert status == 503 and '"service": false' in body
    status, _ = await get(bot, "/readyz")
    assert status == 503
    assert value(await metrics(bot), "ser_live_workers") == 0
