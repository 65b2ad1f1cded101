"""Scale-out (issue 15): a Redis broker, `ser worker` processes, sharded bot processes, shared limits.

Each test starts its own ``redis-server`` on a free port (never the machine's
shared one), so it may stop it and nothing else is touched.  The bot and the
workers run as they do in production: separate ``python -m bot`` and
``python -m ser_engine worker`` processes, talking to the fake Discord of
``tests/fake_discord`` over loopback.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from tests._consent import allow_analysis_in
from tests.conftest import _require
from tests.fake_discord import FakeDiscord

pytestmark = pytest.mark.asyncio(loop_scope="module")

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(__file__).resolve().parent / "data"
VOICE_MESSAGE = 8192


# ------------------------------------------------------------------ helpers
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class RedisServer:
    """A throw-away ``redis-server`` on 127.0.0.1 (no persistence), which tests may stop and start again."""

    def __init__(self, workdir: Path) -> None:
        exe = shutil.which("redis-server")
        _require(exe is not None, "redis-server is not installed (apt-get install redis-server; .ci/run does)")
        self.exe, self.workdir, self.port = str(exe), workdir, _free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [self.exe, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", str(self.workdir)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as s:
                s.sendall(b"PING\r\n")
                if s.recv(16).startswith(b"+PONG"):
                    return
            time.sleep(0.05)
        raise RuntimeError("redis-server did not start")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(10)
            self.proc = None


def _child_env(**extra: str) -> dict[str, str]:
    """The environment of a child process: this checkout first on the path, no inherited secrets."""
    env = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "CI")}
    env.update(PYTHONPATH=str(ROOT), PYTHONUNBUFFERED="1", **extra)
    return env


def _spawn(args: list[str], log: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    """Start ``python args`` in its own session (so the whole group can be killed), output to ``log``."""
    with log.open("wb") as out:
        return subprocess.Popen([sys.executable, *args], cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)  # fmt: skip


def _kill_group(proc: subprocess.Popen[bytes], sig: int = signal.SIGKILL) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, sig)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        _kill_group(proc, signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            pass
    _kill_group(proc)  # the worker's own processes too
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(5)


async def _wait_for_log(path: Path, text: str, timeout: float) -> None:
    """Wait until the process writing ``path`` logged ``text`` (e.g. the bot's "logged in as": on_ready ran)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and text in path.read_text(errors="replace"):
            return
        await asyncio.sleep(0.2)
    raise AssertionError(f"{path.name}: no {text!r} within {timeout} s")


def _snowflake_on_shard(shard_id: int, shard_count: int) -> str:
    """A fresh snowflake whose ``(id >> 22) % shard_count == shard_id`` (Discord's shard rule)."""
    from tests.fake_discord import payloads as p

    value = int(p.snowflake())
    ms = value >> 22
    value += ((shard_id - ms) % shard_count) << 22
    return str(value)


def _worker_args(redis_url: str, concurrency: int = 1) -> list[str]:
    return ["-m", "ser_engine", "worker", "--broker", redis_url, "--concurrency", str(concurrency)]


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Any:
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def notes(voice_note_factory: Any, predictor: Any) -> list[tuple[bytes, Any]]:
    """The four fixture clips as Discord voice notes (Ogg/Opus), with the engine's own prediction of each."""
    out = []
    for clip in sorted(DATA.glob("*.flac")):
        data = voice_note_factory(clip).read_bytes()
        out.append((data, predictor.predict(data)))
    return out


# -------------------------------------------------------------------- tests
async def test_shared_cooldown_counts_a_user_once_across_processes(redis_server: RedisServer) -> None:
    """Two bot processes (two limiters on one Redis): a member cannot double the quota through two shards."""
    from redis.asyncio import Redis

    from bot.cogs.emotion.limits import CooldownError
    from bot.shared_limits import SharedReplyPacer, SharedUserCooldown

    a, b = Redis.from_url(redis_server.url), Redis.from_url(redis_server.url)
    try:
        shard0 = SharedUserCooldown(a, 3, 60.0, prefix=f"t{secrets.token_hex(4)}:")
        shard1 = SharedUserCooldown(b, 3, 60.0, prefix=shard0.prefix)
        await shard0.admit(42)
        await shard1.admit(42)
        await shard0.admit(42)
        with pytest.raises(CooldownError) as err:
            await shard1.admit(42)
        assert 0 < err.value.retry_after_s <= 60
        await shard1.admit(7)  # another member is not affected

        pace0 = SharedReplyPacer(a, 2, 1.0, prefix=f"p{secrets.token_hex(4)}:")
        pace1 = SharedReplyPacer(b, 2, 1.0, prefix=pace0.prefix)
        assert await pace0.reserve_shared(5) == 0.0
        assert await pace1.reserve_shared(5) == 0.0  # the burst of 2 is shared ...
        third = await pace0.reserve_shared(5)
        assert third is not None and 0.9 < third <= 1.0  # ... so the third waits for the refill
        assert await pace1.reserve_shared(5, max_wait_s=0.5) is None  # would wait ~2 s: dropped, no token taken
    finally:
        await a.aclose()
        await b.aclose()


async def test_broker_down_answers_busy_then_reconnects(
    redis_server: RedisServer, tmp_path: Path, notes: list[tuple[bytes, Any]], predictor: Any
) -> None:
    """With the broker stopped a request is refused "busy" at once; once it is back, analyses flow again."""
    from ser_engine.distributed.client import BrokerService, BrokerUnavailableError

    queue = f"q{secrets.token_hex(4)}"
    worker = _spawn([*_worker_args(redis_server.url), "--queue", queue], tmp_path / "worker.log", _child_env())
    data, expected = notes[0]
    try:
        async with BrokerService(predictor, redis_server.url, queue=queue, timeout_s=120) as broker:
            first = await broker.analyse(data)
            assert first.label == expected.label and first.model_version == expected.model_version
            redis_server.stop()
            started = time.monotonic()
            with pytest.raises(BrokerUnavailableError) as err:
                await broker.analyse(data)
            assert "busy" in err.value.user_message and time.monotonic() - started < 10
            redis_server.start()
            again = await broker.analyse(data)  # the client and the worker reconnected by themselves
            assert again.label == expected.label
    finally:
        _stop(worker)
        if redis_server.proc is None:
            redis_server.start()


async def test_a_job_whose_worker_dies_is_analysed_again_by_another(
    redis_server: RedisServer, tmp_path: Path, notes: list[tuple[bytes, Any]], predictor: Any
) -> None:
    """Kill the worker holding a job: the job is delivered again (within 30 s) and answered once, by the other."""
    from ser_engine.distributed import REDELIVERY_S
    from ser_engine.distributed.client import BrokerService

    assert REDELIVERY_S <= 30
    queue = f"q{secrets.token_hex(4)}"
    env = _child_env()
    first = _spawn([*_worker_args(redis_server.url), "--queue", queue], tmp_path / "w1.log", env)
    data, expected = notes[1]
    try:
        async with BrokerService(predictor, redis_server.url, queue=queue, timeout_s=120) as broker:
            await broker.analyse(data)  # the first worker is up
            # Freeze its analysis processes (not the process taking jobs): the next job hangs on it.
            for pid in _group_members(first.pid):
                if pid != first.pid:
                    os.kill(pid, signal.SIGSTOP)
            task = asyncio.create_task(broker.analyse(data, job_id="note:held"))
            redis = broker.redis
            for _ in range(200):
                if await redis.exists("arq:in-progress:note:held"):
                    break
                await asyncio.sleep(0.05)
            assert await redis.exists("arq:in-progress:note:held"), "the first worker never took the job"
            _kill_group(first)  # the worker and its processes die with the job in progress
            killed_at = time.monotonic()
            second = _spawn([*_worker_args(redis_server.url), "--queue", queue], tmp_path / "w2.log", env)
            try:
                result = await asyncio.wait_for(task, 90)
                waited = time.monotonic() - killed_at
            finally:
                _stop(second)
            assert result.label == expected.label
            assert waited <= 30, f"delivered again after {waited:.1f} s"
            assert not await redis.exists("arq:in-progress:note:held")
    finally:
        _stop(first)


def _group_members(pgid: int) -> list[int]:
    """Process ids of the live processes of process group ``pgid`` (Linux ``/proc``)."""
    pids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError):
            fields = stat.read_text().rsplit(") ", 1)[1].split()
            if int(fields[2]) == pgid and fields[0] != "Z":
                pids.append(int(stat.parent.name))
    return pids


async def test_two_shards_three_workers_300_notes_one_worker_killed(
    redis_server: RedisServer, tmp_path: Path, notes: list[tuple[bytes, Any]], model_path: Path
) -> None:
    """Issue 15, "Done when": 2 bot processes (shards 0 and 1 of 2), 3 `ser worker` processes, 300 notes from
    30 members in 6 servers over both shards, one worker killed mid-run: every note answered exactly once,
    with the engine's label."""
    async with FakeDiscord(token="MTA5.fake." + secrets.token_urlsafe(24)) as fake:
        fake.recommended_shards = 2
        guilds = [await fake.add_guild(f"server {i}", guild_id=_snowflake_on_shard(i % 2, 2)) for i in range(6)]
        members = {g["id"]: [await fake.add_guild_member(g, f"m{i}-{j}") for j in range(5)] for i, g in enumerate(guilds)}
        queue = f"q{secrets.token_hex(4)}"
        common = dict(
            DISCORD_TOKEN=fake.token, DISCORD_API_BASE_URL=fake.base_url, SER_BROKER_URL=redis_server.url,
            SER_BROKER_QUEUE=queue, SER_MODEL_PATH=str(model_path), SHARD_COUNT="2", SYNC_COMMANDS="false",
            SER_MAX_PENDING="400", SER_USER_MAX_NOTES="50", SER_CHANNEL_REPLY_BURST="60",
            SER_CHANNEL_REPLIES_PER_S="60", SER_MAX_DOWNLOADS="8", LOG_LEVEL="INFO",
            SER_REGISTRY_DIR=str(tmp_path / "registry"),
        )  # fmt: skip
        procs: list[subprocess.Popen[bytes]] = []
        try:
            workers = [_spawn([*_worker_args(redis_server.url), "--queue", queue], tmp_path / f"worker{i}.log",
                              _child_env()) for i in range(3)]  # fmt: skip
            procs += workers
            for shard in (0, 1):
                await allow_analysis_in(tmp_path / f"bot{shard}", *(g["id"] for g in guilds))  # consent first
                env = _child_env(**common, SHARD_IDS=str(shard), DATA_DIR=str(tmp_path / f"bot{shard}"))
                procs.append(_spawn(["-m", "bot"], tmp_path / f"bot{shard}.log", env))

            async def both_shards_ready() -> None:
                while {tuple(i.get("shard") or ()) for i in fake.identifies} < {(0, 2), (1, 2)}:
                    await asyncio.sleep(0.2)
                await asyncio.sleep(2.0)  # GUILD_CREATEs processed (guild_ready_timeout)

            await asyncio.wait_for(both_shards_ready(), 180)
            for shard in (0, 1):
                await _wait_for_log(tmp_path / f"bot{shard}.log", "logged in as", 60)
            for proc in procs:
                assert proc.poll() is None, f"a process exited early: {proc.args}"

            sent: dict[str, Any] = {}  # message id -> expected prediction
            shard_of: dict[str, int] = {}
            for n in range(300):
                guild = guilds[n % 6]
                member = members[guild["id"]][(n // 6) % 5]
                data, expected = notes[n % len(notes)]
                att = fake.add_attachment(data, "voice-message.ogg", "audio/ogg", voice_message=True,
                                          duration_s=expected.duration_s)  # fmt: skip
                msg = await fake.send_message(attachments=[att], flags=VOICE_MESSAGE, member=member,
                                              channel=guild["channels"][0])  # fmt: skip
                sent[msg["id"]] = expected
                shard_of[msg["id"]] = (int(guild["id"]) >> 22) % 2
                if n % 30 == 29:
                    await asyncio.sleep(0.3)
                if n == 150:  # mid-run: kill one worker with its processes, as the OOM killer or a crash would
                    _kill_group(workers[0])
            assert set(shard_of.values()) == {0, 1}

            def replies() -> Counter[str]:
                found = fake.find_requests("POST", r"^/channels/\d+/messages$")
                return Counter(str((r.json.get("message_reference") or {}).get("message_id")) for r in found)

            deadline = time.monotonic() + 150
            while time.monotonic() < deadline and not set(sent) <= set(replies()):
                assert all(p.poll() is None for p in procs[3:]), "a bot process died"
                await asyncio.sleep(0.5)
            await asyncio.sleep(2.0)  # a doubled reply would arrive now
            counts = replies()
            missing = [m for m in sent if counts[m] == 0]
            doubled = {m: c for m, c in counts.items() if c > 1}
            assert not missing, f"{len(missing)} notes not answered"
            assert not doubled, f"notes answered more than once: {doubled}"
            assert set(counts) <= set(sent)
            wrong = []
            for req in fake.find_requests("POST", r"^/channels/\d+/messages$"):
                note_id = str(req.json["message_reference"]["message_id"])
                embed = (req.json.get("embeds") or [{}])[0]
                label = re.search(r"\*\*(\w+)\*\*", embed.get("description", ""))
                if label is None or label.group(1) != sent[note_id].label:
                    wrong.append((note_id, embed.get("description") or req.json.get("content")))
            assert not wrong, f"{len(wrong)} replies without the engine's label, e.g. {wrong[:3]}"
            assert workers[0].poll() is not None  # it really died
            survivors = "".join((tmp_path / f"worker{i}.log").read_text() for i in (1, 2))
            assert "Traceback" not in survivors
        finally:
            for proc in procs:
                _stop(proc)


async def test_every_worker_serves_a_newly_activated_version_within_seconds(
    redis_server: RedisServer, tmp_path: Path, notes: list[tuple[bytes, Any]], model_path: Path
) -> None:
    """Point 4: two workers on a shared registry; activating v2 and announcing it reaches both within seconds,
    and every analysis names the version that produced it."""
    from ser_engine.distributed.client import BrokerService
    from ser_engine.predict import Predictor
    from ser_engine.registry import ModelRegistry

    registry = ModelRegistry(tmp_path / "registry")
    v1 = registry.import_file(model_path).version
    v2 = registry.import_file(model_path).version
    registry.activate(v1)
    queue = f"q{secrets.token_hex(4)}"
    args = [*_worker_args(redis_server.url), "--queue", queue, "--registry", str(registry.root)]
    workers = [_spawn(args, tmp_path / f"w{i}.log", _child_env()) for i in range(2)]
    data, expected = notes[2]
    try:
        old = Predictor(registry.load(v1))
        async with BrokerService(old, redis_server.url, queue=queue, timeout_s=120) as broker:
            first = await asyncio.gather(*(broker.analyse(data) for _ in range(8)))
            assert {p.model_version for p in first} == {old.model_version}
            assert old.model_version.startswith(f"v{v1}@")
            registry.activate(v2)
            new = Predictor(registry.load(v2))
            broker.swap_predictor(new)  # what the admin cog does on /model activate
            announced = time.monotonic()
            served: set[str] = set()
            while time.monotonic() - announced < 8:  # both workers, all of their processes
                batch = await asyncio.gather(*(broker.analyse(data) for _ in range(8)))
                served = {p.model_version for p in batch}
                if served == {new.model_version}:
                    break
                await asyncio.sleep(0.2)
            assert served == {new.model_version}, f"after 8 s still served: {served}"
            assert all(p.label == expected.label for p in batch)
        logs = "".join((tmp_path / f"w{i}.log").read_text() for i in range(2))
        assert logs.count(f"now serving v{v2}@") == 2  # each worker swapped (not one serving for both)
    finally:
        for w in workers:
            _stop(w)


async def test_notes_in_flight_when_the_bot_is_killed_are_answered_after_its_restart(
    redis_server: RedisServer, tmp_path: Path, notes: list[tuple[bytes, Any]], model_path: Path
) -> None:
    """Point 2: a bot process killed mid-burst; the next one answers every note it left, exactly once."""
    async with FakeDiscord(token="MTA5.fake." + secrets.token_urlsafe(24)) as fake:
        queue = f"q{secrets.token_hex(4)}"
        env = _child_env(
            DISCORD_TOKEN=fake.token, DISCORD_API_BASE_URL=fake.base_url, SER_BROKER_URL=redis_server.url,
            SER_BROKER_QUEUE=queue, SER_MODEL_PATH=str(model_path), SYNC_COMMANDS="false", LOG_LEVEL="INFO",
            SER_REGISTRY_DIR=str(tmp_path / "registry"), DATA_DIR=str(tmp_path / "bot"),
        )  # fmt: skip
        await allow_analysis_in(tmp_path / "bot", fake.guild_id)  # consent first
        worker = _spawn([*_worker_args(redis_server.url), "--queue", queue], tmp_path / "worker.log", _child_env())
        first = _spawn(["-m", "bot"], tmp_path / "bot1.log", env)
        second = None
        try:
            await fake.wait_until_connected(timeout=120)
            await _wait_for_log(tmp_path / "bot1.log", "logged in as", 120)
            for pid in _group_members(worker.pid):  # the analyses hang: the notes stay in flight
                if pid != worker.pid:
                    os.kill(pid, signal.SIGSTOP)
            sent = {}
            for n in range(5):
                data, expected = notes[n % len(notes)]
                att = fake.add_attachment(data, "voice-message.ogg", "audio/ogg", voice_message=True,
                                          duration_s=expected.duration_s)  # fmt: skip
                msg = await fake.send_message(attachments=[att], flags=VOICE_MESSAGE)
                sent[msg["id"]] = expected
            from redis.asyncio import Redis

            r = Redis.from_url(redis_server.url)
            try:
                jobs = [f"arq:job:note:{m}" for m in sent]
                for _ in range(200):  # recorded in flight, and their jobs queued behind the frozen worker
                    if await r.hlen("ser:inflight:all") == 5 and await r.exists(*jobs) == 5:
                        break
                    await asyncio.sleep(0.1)
                assert await r.hlen("ser:inflight:all") == 5
                assert await r.exists(*jobs) == 5
            finally:
                await r.aclose()
            _kill_group(first)  # the bot dies with 5 notes in flight
            first.wait(10)
            for pid in _group_members(worker.pid):
                os.kill(pid, signal.SIGCONT)
            assert not fake.find_requests("POST", r"^/channels/\d+/messages$")
            second = _spawn(["-m", "bot"], tmp_path / "bot2.log", env)
            deadline = time.monotonic() + 120
            found: list[Any] = []
            while time.monotonic() < deadline:
                found = fake.find_requests("POST", r"^/channels/\d+/messages$")
                if len(found) >= 5:
                    break
                await asyncio.sleep(0.5)
            await asyncio.sleep(2.0)
            found = fake.find_requests("POST", r"^/channels/\d+/messages$")
            ids = Counter(str(r.json["message_reference"]["message_id"]) for r in found)
            assert ids == Counter({m: 1 for m in sent}), ids
            for req in found:
                embed = (req.json.get("embeds") or [{}])[0]
                label = re.search(r"\*\*(\w+)\*\*", embed.get("description", ""))
                assert label is not None and label.group(1) == sent[str(req.json["message_reference"]["message_id"])].label
        finally:
            for proc in (first, second, worker):
                if proc is not None:
                    _stop(proc)
