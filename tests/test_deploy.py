"""The deployment (issue 14, points 1 and 5): the container's files, a run as an unprivileged user, JSON logs.

No container engine here can pull base images, so the image's conditions are
reproduced directly: ``python -m bot`` runs as the unprivileged user
``nobody`` (uid 65534) with the application folder read-only to it and only
``DATA_DIR`` writable, against the fake Discord, and must answer a voice
note; the Dockerfile's ``HEALTHCHECK`` command is run against that bot.
"""

from __future__ import annotations

import asyncio
import json
import os
import pwd
import re
import secrets
import shlex
import shutil
import signal
import site
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from bot.config import Settings
from tests._consent import allow_analysis_in
from tests.conftest import IN_CI
from tests.fake_discord import FakeDiscord

ROOT = Path(__file__).resolve().parents[1]
VOICE_MESSAGE = 8192
NOBODY = 65534


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _get(port: int, path: str) -> tuple[int, str]:
    import aiohttp

    async with aiohttp.ClientSession() as session:
        async with session.get(f"http://127.0.0.1:{port}{path}") as response:
            return response.status, await response.text()


def healthcheck_command() -> list[str]:
    """The Dockerfile's ``HEALTHCHECK ... CMD [...]`` (exec form), as an argument list."""
    text = (ROOT / "Dockerfile").read_text()
    found = re.search(r"^HEALTHCHECK\b[^\n]*\\\n\s*CMD (\[.*\])\s*$", text, flags=re.M)
    assert found, "the Dockerfile has no HEALTHCHECK in exec form"
    return json.loads(found.group(1))


# ------------------------------------------------------------------ the files
def test_dockerfile_runs_as_a_non_root_user_with_data_under_a_volume_and_a_healthcheck() -> None:
    text = (ROOT / "Dockerfile").read_text()
    user = re.findall(r"^USER\s+(\S+)", text, flags=re.M)
    assert user and user[-1] not in ("root", "0")
    assert re.search(r"DATA_DIR=/data\b", text) and re.search(r'^VOLUME \["/data"\]', text, flags=re.M)
    assert re.search(r"SER_HTTP_PORT=8080", text) and "chown ser:ser /data" in text
    command = healthcheck_command()
    assert command[0] == "python" and "/healthz" in " ".join(command)
    assert re.search(r'^CMD \["ser-bot"\]', text, flags=re.M)


def test_compose_runs_the_bot_after_a_healthy_postgresql_with_named_volumes() -> None:
    compose = yaml.safe_load((ROOT / "compose.yaml").read_text())
    db, bot = compose["services"]["db"], compose["services"]["bot"]
    assert db["image"].startswith("postgres:")
    assert "pg_isready" in " ".join(db["healthcheck"]["test"])
    assert bot["depends_on"] == {"db": {"condition": "service_healthy"}}
    assert bot["build"] == "." and bot["environment"]["DATA_DIR"] == "/data"
    url = bot["environment"]["DATABASE_URL"]
    assert url.startswith("postgresql://") and "@db:5432/" in url
    named = set(compose["volumes"])
    mounts = {m.split(":")[0]: m.split(":")[1] for m in bot["volumes"] + db["volumes"]}
    assert mounts == {"ser-data": "/data", "pg-data": "/var/lib/postgresql/data"} and set(mounts) == named
    Settings(_env_file=None, discord_token="x", **{k.lower(): v for k, v in bot["environment"].items()})


# ---------------------------------------------------- running as an unprivileged user
def _nobody_python() -> tuple[list[str], list[str]] | None:
    """(command prefix running an interpreter as uid 65534, extra PYTHONPATH entries), or None.

    The test's own interpreter when that user may run it; otherwise (an
    interpreter under ``/root``, as with pyenv) the same installation bind-
    mounted at a path that user can reach, in a private mount namespace.
    """
    probe = "import discord, numpy, sklearn, sqlalchemy, ssl, prometheus_client"
    direct = ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", "--"]
    ok = subprocess.run([*direct, sys.executable, "-c", probe], capture_output=True, timeout=60)
    if ok.returncode == 0:
        return [*direct, sys.executable], []
    if shutil.which("unshare") is None:
        return None
    mount = Path(tempfile.mkdtemp(prefix="ser-py-"))
    mount.chmod(0o755)
    prefix = Path(sys.base_prefix).resolve()
    exe = Path(sys.executable).resolve()
    if not exe.is_relative_to(prefix):
        return None
    inner = mount / exe.relative_to(prefix)
    paths = [str(mount / Path(p).resolve().relative_to(prefix)) for p in site.getsitepackages()
             if Path(p).resolve().is_relative_to(prefix)]  # fmt: skip
    # The interpreter finds its libpython through an absolute path under the unreachable prefix: point the
    # dynamic loader at the mounted copy (LD_LIBRARY_PATH also reaches the worker processes).
    libs = f"LD_LIBRARY_PATH={shlex.quote(str(mount / 'lib'))}"
    wrapper = ["unshare", "-m", "sh", "-c", f'mount --bind {shlex.quote(str(prefix))} {shlex.quote(str(mount))} '
               f'&& exec {shlex.join(direct)} env {libs} "$@"', "sh", str(inner)]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(paths)}
    ok = subprocess.run([*wrapper, "-c", probe], capture_output=True, timeout=60, env=env)
    return (wrapper, paths) if ok.returncode == 0 else None


@pytest.fixture(scope="module")
def as_nobody() -> tuple[list[str], list[str]]:
    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        pytest.skip("needs root (to switch to the unprivileged user) and setpriv")
    try:
        pwd.getpwuid(NOBODY)
    except KeyError:
        pytest.skip("no user with uid 65534")
    found = _nobody_python()
    if found is None:
        message = "no Python installation the unprivileged user can run (and no private mount namespace)"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    return found


def _read_only_app(tmp: Path) -> Path:
    """The application as the image holds it (bot, ser_engine, models), owned by root, read-only to others."""
    app = tmp / "app"
    app.mkdir()
    for package in ("bot", "ser_engine"):
        shutil.copytree(ROOT / package, app / package, ignore=shutil.ignore_patterns("__pycache__"))
    (app / "models").mkdir()
    for name in ("ravdess-8class.joblib", "ravdess-8class.json"):
        shutil.copy2(ROOT / "models" / name, app / "models" / name)
    for path in [app, *app.rglob("*")]:
        path.chmod(0o555 if path.is_dir() else 0o444)
    return app


def _snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(folder)): (p.stat().st_size, int(p.stat().st_mtime_ns)) for p in folder.rglob("*")}


@pytest.fixture
def deploy_dirs() -> Iterator[Path]:
    """A world-traversable scratch folder (pytest's own is private to root)."""
    tmp = Path(tempfile.mkdtemp(prefix="ser-deploy-"))
    tmp.chmod(0o755)
    try:
        yield tmp
    finally:
        for path in [tmp, *tmp.rglob("*")]:  # the read-only app must become deletable again
            if path.is_dir():
                path.chmod(0o755)
        shutil.rmtree(tmp, ignore_errors=True)


def _env(paths: list[str], app: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k.lower() not in Settings.model_fields and not k.startswith(("SER_", "PYTHON"))}  # fmt: skip
    env.update(HOME="/nonexistent", PYTHONPATH=os.pathsep.join([str(app), *paths]), PYTHONDONTWRITEBYTECODE="1",
               SER_MODEL_PATH=str(app / "models" / "ravdess-8class.joblib"), **extra)  # fmt: skip
    return env


def test_an_unwritable_data_dir_stops_the_bot_with_exit_code_2_and_one_line(
    as_nobody: tuple[list[str], list[str]], deploy_dirs: Path
) -> None:
    python, paths = as_nobody
    app = _read_only_app(deploy_dirs)
    env = _env(paths, app, DISCORD_TOKEN="MTA5.unused." + secrets.token_urlsafe(12),
               DISCORD_API_BASE_URL=f"http://127.0.0.1:{free_port()}", DATA_DIR=str(app / "data"))  # fmt: skip
    done = subprocess.run([*python, "-m", "bot"], cwd=app, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "DATA_DIR" in lines[0] and str(app / "data") in lines[0], done.stderr
    assert not (app / "data").exists()


async def test_the_bot_runs_as_nobody_with_a_read_only_app_folder_and_answers_a_voice_note(
    as_nobody: tuple[list[str], list[str]], deploy_dirs: Path, angry_note: bytes
) -> None:
    python, paths = as_nobody
    app = _read_only_app(deploy_dirs)
    data = deploy_dirs / "data"
    write_probe = subprocess.run([*python, "-c", f"open({str(app / 'x')!r}, 'w')"], capture_output=True, timeout=60,
                                 env=_env(paths, app))  # fmt: skip
    assert write_probe.returncode != 0 and b"PermissionError" in write_probe.stderr  # the app folder is read-only
    before = _snapshot(app)
    port = free_port()
    async with FakeDiscord(token="MTA5.nobody." + secrets.token_urlsafe(24)) as fake:
        await allow_analysis_in(data, fake.guild_id)  # consent first, as a server manager would
        for path in [data, *data.rglob("*")]:
            os.chown(path, NOBODY, NOBODY)
        env = _env(paths, app, DISCORD_TOKEN=fake.token, DISCORD_API_BASE_URL=fake.base_url, DATA_DIR=str(data),
                   SER_WORKERS="1", LOG_FORMAT="json", SER_HTTP_PORT=str(port))  # fmt: skip
        out_path, err_path = deploy_dirs / "stdout.log", deploy_dirs / "stderr.log"
        with open(out_path, "wb") as out, open(err_path, "wb") as err:
            proc = await asyncio.create_subprocess_exec(*python, "-m", "bot", cwd=app, env=env,
                                                        stdin=asyncio.subprocess.DEVNULL, stdout=out, stderr=err)
            try:
                try:
                    await fake.wait_until_connected(timeout=120)
                except Exception:
                    raise AssertionError(err_path.read_text()[-4000:]) from None
                note = fake.add_attachment(angry_note, "voice-message.ogg", "audio/ogg", voice_message=True,
                                           duration_s=4.0)  # fmt: skip
                mark = fake.mark()
                msg = await fake.send_message(attachments=[note], flags=VOICE_MESSAGE)
                reply = await fake.wait_for_request("POST", rf"^/channels/{fake.channel['id']}/messages$", 90,
                                                    since=mark)  # fmt: skip
                assert str(reply.json["message_reference"]["message_id"]) == msg["id"] and reply.json["embeds"]
                for _ in range(300):  # READY's guilds are complete (discord.py waits guild_ready_timeout for more)
                    if (await _get(port, "/healthz"))[0] == 200:
                        break
                    await asyncio.sleep(0.1)
                health = await asyncio.to_thread(subprocess.run, healthcheck_command(), timeout=30,
                                                 env={**env, "PYTHONPATH": ""}, capture_output=True)  # fmt: skip
                assert health.returncode == 0, (await _get(port, "/healthz"), health.stderr)  # the image's HEALTHCHECK
            finally:
                if proc.returncode is None:
                    proc.send_signal(signal.SIGTERM)
                code = await asyncio.wait_for(proc.wait(), 60)
    stderr = err_path.read_text()
    assert code == 0, stderr[-3000:]
    assert _snapshot(app) == before  # nothing written in the application folder
    assert (data / "ser.db").is_file() and (data / "registry").is_dir()
    assert all(p.stat().st_uid == NOBODY for p in data.rglob("*") if p.name != "ser.db")
    entries = [json.loads(line) for line in (stderr + out_path.read_text()).splitlines() if line.strip()]
    assert entries and all({"time", "level", "logger", "message"} <= set(e) for e in entries)
    assert fake.token not in stderr


# ---------------------------------------------------------------- point 5: JSON logs
async def test_with_log_format_json_every_line_is_one_json_object(
    tmp_path: Path, model_path: Path, angry_note: bytes
) -> None:
    """``python -m bot`` with ``LOG_FORMAT=json`` and DEBUG logging: a voice note, a bad one, a SIGTERM."""
    async with FakeDiscord(token="MTA5.json." + secrets.token_urlsafe(24)) as fake:
        await allow_analysis_in(tmp_path / "data", fake.guild_id)
        env = {k: v for k, v in os.environ.items() if k.lower() not in Settings.model_fields}
        env.update(PYTHONPATH=str(ROOT), DISCORD_TOKEN=fake.token, DISCORD_API_BASE_URL=fake.base_url,
                   SER_MODEL_PATH=str(model_path), SER_WORKERS="1", LOG_LEVEL="DEBUG", LOG_FORMAT="json",
                   SER_WORKERZ="2")  # fmt: skip  # a misspelt setting: warned about, as JSON
        out_path, err_path = tmp_path / "stdout.log", tmp_path / "stderr.log"
        with open(out_path, "wb") as out, open(err_path, "wb") as err:
            proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "bot", cwd=tmp_path, env=env,
                                                        stdin=asyncio.subprocess.DEVNULL, stdout=out, stderr=err)
            try:
                await fake.wait_until_connected(timeout=90)
                for audio in (angry_note, b"OggS" + secrets.token_bytes(2000)):
                    note = fake.add_attachment(audio, "voice-message.ogg", "audio/ogg", voice_message=True,
                                               duration_s=4.0)  # fmt: skip
                    mark = fake.mark()
                    await fake.send_message(attachments=[note], flags=VOICE_MESSAGE)
                    await fake.wait_for_request("POST", rf"^/channels/{fake.channel['id']}/messages$", 60, since=mark)
            finally:
                if proc.returncode is None:
                    proc.send_signal(signal.SIGTERM)
                code = await asyncio.wait_for(proc.wait(), 30)
    text = err_path.read_text() + out_path.read_text()
    assert code == 0, text[-3000:]
    lines = [line for line in text.splitlines() if line.strip()]
    entries: list[dict[str, Any]] = []
    for line in lines:
        entry = json.loads(line)  # every line, stdout and stderr: one JSON object
        assert isinstance(entry, dict) and {"time", "level", "logger", "message"} <= set(entry), line
        entries.append(entry)
    assert len(entries) > 20  # DEBUG: discord.py's own lines came through the same formatter
    assert any(e["logger"].startswith("discord") for e in entries)
    assert any("SER_WORKERZ" in e["message"] and "SER_WORKERS" in e["message"] and e["level"] == "WARNING"
               for e in entries)  # fmt: skip
    assert any(e["message"] == "shutting down" for e in entries)
    assert fake.token not in text and "Traceback" not in "".join(e["message"] for e in entries)


def test_json_lines_keep_error_ids_and_redact_secrets() -> None:
    import logging

    from bot.cogs.common import user_message_for
    from bot.logging_setup import REDACTED, JsonFormatter

    secret = 'tok"en\\with' + secrets.token_urlsafe(8)  # characters JSON escapes
    formatter = JsonFormatter([secret])
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    logger = logging.getLogger("bot.cogs.common")
    keep = Keep()
    logger.addHandler(keep)
    try:
        shown = user_message_for(RuntimeError(f"failed with {secret}"), where="voice message 1")
    finally:
        logger.removeHandler(keep)
    error_id = re.search(r"error id `([0-9a-f]{8})`", shown).group(1)
    (line,) = [formatter.format(r) for r in records]
    assert "\n" not in line
    entry = json.loads(line)
    assert entry["error_id"] == error_id and entry["level"] == "ERROR"
    assert "RuntimeError" in entry["exception"] and REDACTED in entry["exception"]
    assert secret not in line and json.dumps(secret)[1:-1] not in line
