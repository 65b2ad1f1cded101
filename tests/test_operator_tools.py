"""Operator tools (issue 14, point 7): ``ser --version``, ``ser-bot --check``, unknown ``SER_*`` variables.

``ser-bot --check`` runs as an operator would run it (``python -m bot --check``
in a fresh process, configured through the environment) with the fake
Discord's URL configured: it must never contact it.
"""

from __future__ import annotations

import os
import secrets
import socket
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from bot.config import Settings
from bot.preflight import unknown_ser_variables

ROOT = Path(__file__).resolve().parents[1]


def run(args: list[str], cwd: Path, **extra: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k.lower() not in Settings.model_fields and not k.startswith("SER_")}
    env.update(PYTHONPATH=str(ROOT), **extra)
    return subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=180)


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def lines_of(done: subprocess.CompletedProcess[str]) -> dict[str, str]:
    """``{check name: 'ok ...' or 'FAIL ...'}`` from ``--check``'s output."""
    out = {}
    for line in done.stdout.splitlines():
        status, rest = line[:4].strip(), line[5:]
        name, _, detail = rest.partition(": ")
        out[name] = f"{status} {detail}"
    return out


def test_ser_and_ser_bot_print_the_package_version(tmp_path: Path) -> None:
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    done = run(["-m", "ser_engine", "--version"], tmp_path)
    assert (done.returncode, done.stdout.strip()) == (0, f"ser {version}")
    done = run(["-m", "bot", "--version"], tmp_path)
    assert (done.returncode, done.stdout.strip()) == (0, f"ser-bot {version}")


@pytest.fixture
def base_env(tmp_path: Path, model_path: Path) -> dict[str, str]:
    # A closed port as the API: --check must not need Discord (a request would fail, not hang).
    return {"DISCORD_TOKEN": "MTA5.check." + secrets.token_urlsafe(16),
            "DISCORD_API_BASE_URL": f"http://127.0.0.1:{closed_port()}", "SER_MODEL_PATH": str(model_path),
            "DATA_DIR": str(tmp_path / "data")}  # fmt: skip


def test_check_passes_only_once_the_database_is_migrated(tmp_path: Path, base_env: dict[str, str]) -> None:
    first = run(["-m", "bot", "--check"], tmp_path, **base_env)
    checks = lines_of(first)
    assert first.returncode == 2, first.stdout + first.stderr
    assert checks["database"].startswith("FAIL") and "no schema yet" in checks["database"]
    for name in ("settings", "DATA_DIR", "SER_REGISTRY_DIR", "SER_FEATURE_CACHE_DIR", "SER_MODEL_PATH"):
        assert checks[name].startswith("ok"), checks
    assert (tmp_path / "data" / "registry").is_dir() and (tmp_path / "data" / "feature-cache").is_dir()

    migrated = run(["-m", "bot", "--check", "--migrate"], tmp_path, **base_env)
    assert migrated.returncode == 0, migrated.stdout + migrated.stderr
    again = run(["-m", "bot", "--check"], tmp_path, **base_env)
    assert again.returncode == 0 and all(v.startswith("ok") for v in lines_of(again).values()), again.stdout
    assert base_env["DISCORD_TOKEN"] not in again.stdout + again.stderr


def test_check_reports_an_unreachable_database_a_bad_folder_and_a_bad_model(
    tmp_path: Path, base_env: dict[str, str]
) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where DATA_DIR should be")
    pg = f"postgresql://ser:hunter2-pw@127.0.0.1:{closed_port()}/ser"
    done = run(["-m", "bot", "--check"], tmp_path, **{**base_env, "DATA_DIR": str(blocker), "DATABASE_URL": pg})
    checks = lines_of(done)
    assert done.returncode == 2, done.stdout + done.stderr
    assert checks["DATA_DIR"].startswith("FAIL") and checks["database"].startswith("FAIL")
    assert "cannot be reached" in checks["database"] and "hunter2-pw" not in done.stdout + done.stderr

    missing = tmp_path / "no-such-model.joblib"
    done = run(["-m", "bot", "--check", "--migrate"], tmp_path, **{**base_env, "SER_MODEL_PATH": str(missing)})
    assert done.returncode == 3, done.stdout + done.stderr  # only the model fails
    assert lines_of(done)["SER_MODEL_PATH"].startswith("FAIL")

    done = run(["-m", "bot", "--check"], tmp_path, **{**base_env, "SER_WORKERS": "0"})
    assert done.returncode == 2 and "SER_WORKERS" in done.stderr and not done.stdout


def test_unknown_ser_variables_are_named_with_the_closest_setting(tmp_path: Path, base_env: dict[str, str]) -> None:
    found = dict(unknown_ser_variables({"SER_WORKER": "4", "SER_MAX_PENDING": "3", "SER_TEST_PG_HOST": "x",
                                        "SER_COMPLETELY_NEW": "1", "HOME": "/"}, ["SER_MODEL_PAHT"]))  # fmt: skip
    assert found == {"SER_WORKER": "SER_WORKERS", "SER_MODEL_PAHT": "SER_MODEL_PATH", "SER_COMPLETELY_NEW": None}
    done = run(["-m", "bot", "--check", "--migrate"], tmp_path, **base_env, SER_WORKER="4")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "did you mean SER_WORKERS?" in lines_of(done)["SER_WORKER"]
