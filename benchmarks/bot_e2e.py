"""The bot end to end: a real ``python -m bot`` process against the fake Discord on loopback.

This process runs :class:`tests.fake_discord.FakeDiscord` (REST, gateway and
attachment CDN on 127.0.0.1) and starts the bot as its own process, exactly
as a user would (``python -m bot``), configured through the environment that
:class:`bot.config.Settings` reads (``DISCORD_TOKEN``, ``DISCORD_API_BASE_URL``,
``SER_MODEL_PATH``, ``SER_WORKERS=2``; a throw-away token, never printed).
Its flood control (per-user cool-down, per-channel reply pacing), which
delays or refuses replies on purpose, is lifted through its own settings
(:data:`FLOOD_CONTROL_OFF`): every note here comes from one user in one
channel, and the latency to measure is the bot's work.
Then:

1. **start-up**: spawn -> gateway IDENTIFY/READY -> first voice note answered;
2. **(g) end-to-end latency**: voice messages (MESSAGE_CREATE with the 5 s
   Ogg/Opus note, voice-message flag) sent one at a time; latency = from just
   before the fake dispatches MESSAGE_CREATE to the arrival of the bot's reply
   (``POST /channels/{id}/messages``), with the arrival times of the bot's
   typing request and attachment download as a breakdown;
3. **(f) memory**: more notes, four in flight at once, until the bot has
   analysed ``total`` notes; then the bot process's peak resident set size
   (``VmHWM`` of ``/proc/<pid>/status``), current ``VmRSS`` and PSS, and the
   same for the whole process tree (with ``SER_WORKER_MODE=process`` the
   worker processes and the forkserver): the sum of PSS from
   ``/proc/<pid>/smaps_rollup`` is the fair total, the sum of RSS counts
   pages the workers share copy-on-write once per worker.

Every reply is checked to carry an embed (an answer, not a refusal).
"""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from .timing import load_average, summarise

__all__ = ["FLOOD_CONTROL_OFF", "case_bot", "proc_memory_kib", "process_tree", "smaps_rollup_kib", "tree_memory_kib"]

ROOT = Path(__file__).resolve().parents[1]
VOICE_MESSAGE_FLAG = 8192  # https://discord.com/developers/docs/resources/message#message-object-message-flags


def process_tree(pid: int) -> list[int]:
    """``pid`` and all its descendants (worker processes, the forkserver, the resource tracker).

    Reads the parent of every process in ``/proc/<pid>/stat``; processes that
    exit meanwhile are skipped.
    """
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    tree, frontier = [pid], [pid]
    while frontier:
        children = [p for p, pp in parents.items() if pp in frontier]
        tree += children
        frontier = children
    return tree


def smaps_rollup_kib(pid: int) -> dict[str, int]:
    """``Rss``, ``Pss`` (proportional set size: shared pages divided among their users) and
    ``Private_*`` of a process, in KiB, from ``/proc/<pid>/smaps_rollup`` (Linux >= 4.14).

    Raises
    ------
    OSError
        If the process is gone or the file is unavailable.
    """
    out: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("Rss", "Pss", "Private_Clean", "Private_Dirty") and value.strip().endswith("kB"):
            out[key] = int(value.split()[0])
    return out


def tree_memory_kib(pid: int) -> dict[str, Any]:
    """Memory of ``pid`` and its descendants: per process and in total.

    The honest total of a process tree is the sum of PSS (each shared page
    counted once, split among the processes that map it); the sum of RSS
    counts pages shared copy-on-write by forked workers several times.

    Returns
    -------
    dict
        ``processes``: per pid its command line (first 80 characters),
        ``rss_kib``, ``pss_kib``, ``hwm_kib`` (peak RSS); ``total_rss_kib``,
        ``total_pss_kib``, ``sum_hwm_kib`` (an upper bound of the tree's peak).
    """
    rows: list[dict[str, Any]] = []
    for p in process_tree(pid):
        try:
            roll = smaps_rollup_kib(p)
            status = proc_memory_kib(p)
            cmd = Path(f"/proc/{p}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:
            continue
        rows.append({"pid": p, "cmd": cmd[:80], "rss_kib": roll.get("Rss", 0), "pss_kib": roll.get("Pss", 0),
                     "hwm_kib": status.get("VmHWM", 0)})  # fmt: skip
    return {
        "processes": rows,
        "total_rss_kib": sum(r["rss_kib"] for r in rows),
        "total_pss_kib": sum(r["pss_kib"] for r in rows),
        "sum_hwm_kib": sum(r["hwm_kib"] for r in rows),
    }


def proc_memory_kib(pid: int) -> dict[str, int]:
    """``VmRSS`` and ``VmHWM`` (peak RSS) of a process, in KiB, from ``/proc/<pid>/status``.

    Raises
    ------
    OSError
        If the process is gone or ``/proc`` is unavailable.
    """
    out: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out[key] = int(value.split()[0])
    return out


class _TimedRequests(list):  # type: ignore[type-arg]
    """The fake's request log, noting the arrival time (``perf_counter``) of each request."""

    def __init__(self) -> None:
        super().__init__()
        self.times: list[float] = []

    def append(self, item: Any) -> None:
        self.times.append(time.perf_counter())
        super().append(item)


FLOOD_CONTROL_OFF = {
    "ser_user_max_notes": "1000000",
    "ser_channel_reply_burst": "1000000",
    "ser_channel_replies_per_s": "1000000",
}
"""Bot settings that lift its flood control for the benchmark (where the bot has them)."""

_BOT_SETTINGS_PREFIXES = ("DISCORD_", "SER_", "DEV_GUILD", "DATABASE_URL", "DATA_DIR", "SYNC_COMMANDS", "LOG_LEVEL")


def _bot_env(fake: Any, model_path: Path, extra: dict[str, str] | None = None) -> dict[str, str]:
    """The bot's environment: this process's, minus any bot setting, plus the fake Discord's.

    The bot runs in a throw-away working directory, so its defaults that are
    relative paths (e.g. a local SQLite database under ``./data``) land there
    and no ``.env`` file is read.
    """
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith(_BOT_SETTINGS_PREFIXES)}
    env.update(
        PYTHONPATH=str(ROOT) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else ""),
        DISCORD_TOKEN=fake.token,
        DISCORD_API_BASE_URL=fake.base_url,
        SER_MODEL_PATH=str(model_path),
        SER_WORKERS="2",
        LOG_LEVEL="INFO",
    )
    # Flood control delays or refuses replies on purpose (per-user cool-down, per-channel reply pacing):
    # lifted here, where one user sends every note in one channel, so that latency is the bot's work.
    from bot.config import Settings

    for name, value in FLOOD_CONTROL_OFF.items():
        if name in Settings.model_fields:
            env[name.upper()] = value
    env.update(extra or {})
    return env


async def _send_note(fake: Any, note: bytes, duration_s: float) -> tuple[float, dict[str, float], bool]:
    """Send one voice message; return (latency s, breakdown s, answered with an embed)."""
    attachment = fake.add_attachment(
        note, "voice-message.ogg", "audio/ogg", voice_message=True, duration_s=duration_s
    )
    mark = fake.mark()
    t0 = time.perf_counter()
    msg = await fake.send_message(attachments=[attachment], flags=VOICE_MESSAGE_FLAG)
    path = rf"^/channels/{fake.channel['id']}/messages$"

    def is_reply(r: Any) -> bool:
        return str(((r.json or {}).get("message_reference") or {}).get("message_id")) == msg["id"]

    reply = await fake.wait_for_request("POST", path, timeout=120, since=mark, where=is_reply)
    t1 = time.perf_counter()
    times = fake.requests.times
    breakdown: dict[str, float] = {"reply": times[reply.index] - t0}
    typing = fake.find_requests("POST", rf"^/channels/{fake.channel['id']}/typing$", since=mark)
    download = fake.downloads_of(attachment)
    if typing:
        breakdown["typing"] = times[typing[0].index] - t0
    if download:
        breakdown["download"] = times[download[0].index] - t0
    return t1 - t0, breakdown, bool((reply.json or {}).get("embeds"))


async def _main(
    model_path: Path, note: bytes, duration_s: float, sequential: int, total: int, warmup: int,
    worker_mode: str | None, extra_env: dict[str, str] | None,
) -> dict[str, Any]:
    from tests.fake_discord import FakeDiscord

    result: dict[str, Any] = {}
    async with FakeDiscord(token="MTA5.bench." + secrets.token_urlsafe(24)) as fake:
        fake.requests = _TimedRequests()
        with tempfile.TemporaryDirectory(prefix="ser-bench-bot-") as tmp:
            log_path = Path(tmp) / "bot.log"
            from tests._consent import allow_analysis_in

            # Automatic analysis is off in a server until a manager turns it on (issue 14): turn it on in the
            # default SQLite database of the bot's working directory, before it starts.
            await allow_analysis_in(Path(tmp) / "data", fake.guild_id)
            with open(log_path, "wb") as log_file:
                t_spawn = time.perf_counter()
                proc = await asyncio.create_subprocess_exec(
                    sys.executable, "-m", "bot", cwd=tmp,
                    env=_bot_env(fake, model_path, {**({"SER_WORKER_MODE": worker_mode} if worker_mode else {}),
                                                     **(extra_env or {})}),
                    stdin=asyncio.subprocess.DEVNULL, stdout=log_file, stderr=log_file,
                )  # fmt: skip
                try:
                    exited = asyncio.create_task(proc.wait())
                    connected = asyncio.create_task(fake.wait_until_connected(timeout=180))
                    done, _ = await asyncio.wait({exited, connected}, return_when=asyncio.FIRST_COMPLETED)
                    if exited in done:
                        connected.cancel()
                        lines = [ln for ln in log_path.read_text(errors="replace").splitlines() if ln.strip()]
                        raise RuntimeError(f"the bot exited ({proc.returncode}): {lines[-1] if lines else 'no output'}")
                    connected.result()
                    exited.cancel()
                    t_connected = time.perf_counter()
                    first, _, ok = await _send_note(fake, note, duration_s)
                    t_first = time.perf_counter()
                    result["startup"] = {
                        "connected_s": t_connected - t_spawn,
                        "first_answer_s": t_first - t_spawn,
                        "first_note_latency_s": first,
                        "rss_kib_after_start": proc_memory_kib(proc.pid),
                    }
                    tree_start = tree_memory_kib(proc.pid)
                    analysed, answered = 1, int(ok)
                    for _ in range(warmup):
                        _, _, ok = await _send_note(fake, note, duration_s)
                        analysed, answered = analysed + 1, answered + int(ok)
                    latencies: list[float] = []
                    parts: dict[str, list[float]] = {}
                    for _ in range(sequential):
                        lat, breakdown, ok = await _send_note(fake, note, duration_s)
                        latencies.append(lat)
                        for k, v in breakdown.items():
                            parts.setdefault(k, []).append(v)
                        analysed, answered = analysed + 1, answered + int(ok)
                    result["e2e"] = {
                        **summarise(latencies).to_dict(),
                        "breakdown_median_s": {k: summarise(v).median_s for k, v in parts.items()},
                    }
                    rss_mid = proc_memory_kib(proc.pid)
                    remaining = max(0, total - analysed)
                    load_lat: list[float] = []

                    async def client(n: int) -> None:
                        nonlocal answered
                        for _ in range(n):
                            lat, _, ok = await _send_note(fake, note, duration_s)
                            load_lat.append(lat)
                            answered += int(ok)

                    t_load = time.perf_counter()
                    await asyncio.gather(*(client(remaining // 4 + (i < remaining % 4)) for i in range(4)))
                    load_wall = time.perf_counter() - t_load
                    analysed += remaining
                    mem = proc_memory_kib(proc.pid)
                    result["memory"] = {
                        "analyses": analysed,
                        "answered_with_embed": answered,
                        "peak_rss_kib": mem["VmHWM"],
                        "rss_kib": mem["VmRSS"],
                        "rss_kib_after_sequential": rss_mid,
                        "pss_kib": smaps_rollup_kib(proc.pid).get("Pss"),
                        "tree": tree_memory_kib(proc.pid),
                        "tree_after_start": tree_start,
                        "worker_mode": worker_mode,
                    }
                    if load_lat:
                        result["load"] = {
                            "concurrency": 4,
                            "notes": remaining,
                            "notes_per_s": remaining / load_wall,
                            "latency": summarise(load_lat).to_dict(),
                        }
                finally:
                    if proc.returncode is None:
                        proc.send_signal(signal.SIGTERM)
                        try:
                            await asyncio.wait_for(proc.wait(), 30)
                        except TimeoutError:
                            proc.kill()
                            await proc.wait()
                result["bot_exit_code"] = proc.returncode
    return result


def case_bot(
    model_path: Path, note: bytes, *, duration_s: float = 5.0, sequential: int = 100, total: int = 200, warmup: int = 3,
    worker_mode: str | None = None, extra_env: dict[str, str] | None = None,
) -> dict[str, Any]:
    """(f) + (g): the bot process over the fake Discord.

    Parameters
    ----------
    model_path : Path
        Model bundle the bot loads (``SER_MODEL_PATH``).
    note : bytes
        The voice note (5 s Ogg/Opus).
    duration_s : float
        Its duration, as Discord reports it on the attachment.
    sequential : int
        Messages timed one at a time (g).
    total : int
        Analyses before reading the peak RSS (f), all messages included.
    warmup : int
        Untimed messages after the first answer.
    worker_mode : {"process", "thread"} or None
        ``SER_WORKER_MODE`` of the bot (``None``: the bot's default).
    extra_env : dict of str to str, optional
        More environment variables for the bot (e.g. ``MALLOC_ARENA_MAX``).

    Returns
    -------
    dict
        ``startup`` (seconds from spawn to connected and to the first
        answer), ``e2e`` (latency :class:`~benchmarks.timing.Stats` dict and
        median breakdown: arrival of the typing request, the attachment
        download and the reply, from MESSAGE_CREATE), ``memory``
        (``peak_rss_kib`` = VmHWM of the bot process after ``analyses``,
        ``pss_kib`` of the bot process, ``tree``: RSS, PSS and peak RSS of
        the bot and every process it started, see :func:`tree_memory_kib`;
        ``tree_after_start`` the same before the load), ``load`` (the
        concurrent phase), ``load_average``.

    Raises
    ------
    RuntimeError
        If the bot process exits before connecting.
    """
    before = load_average()
    t0 = time.perf_counter()
    out = asyncio.run(_main(model_path, note, duration_s, sequential, total, warmup, worker_mode, extra_env))
    out["wall_s"] = time.perf_counter() - t0
    out["load_average"] = {"before": before, "after": load_average()}
    return out
