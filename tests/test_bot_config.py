"""Bot configuration and start-up: settings sources, the token's secrecy, ``python -m bot`` without a token."""

from __future__ import annotations

import io
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from bot.config import DEFAULT_API_BASE_URL, Settings
from bot.logging_setup import RedactingFormatter

ROOT = Path(__file__).resolve().parents[1]
TOKEN = "MTIzNDU2Nzg5MDEy.Gh7xYz.s3cr3t-t0k3n-value-for-tests"


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No bot setting comes from the test process's environment."""
    for name in Settings.model_fields:
        monkeypatch.delenv(name.upper(), raising=False)


def run_bot(tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """``python -m bot`` in an empty directory with a clean environment plus ``env``."""
    clean = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONPATH": str(ROOT), "HOME": str(tmp_path), **env}
    return subprocess.run(
        [sys.executable, "-m", "bot"], cwd=tmp_path, env=clean, capture_output=True, text=True, timeout=60
    )


def test_missing_token_exits_nonzero_with_a_helpful_message(tmp_path: Path) -> None:
    result = run_bot(tmp_path)
    assert result.returncode == 2
    assert "DISCORD_TOKEN" in result.stderr
    assert "environment" in result.stderr and ".env" in result.stderr
    assert "Traceback" not in result.stderr


def test_blank_token_counts_as_missing(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("DISCORD_TOKEN=\n")
    result = run_bot(tmp_path)
    assert result.returncode == 2
    assert "DISCORD_TOKEN is not set" in result.stderr


def test_invalid_value_is_named_but_not_echoed(tmp_path: Path) -> None:
    result = run_bot(tmp_path, DISCORD_TOKEN=TOKEN, SER_WORKERS="lots-of-workers")
    assert result.returncode == 2
    assert "SER_WORKERS" in result.stderr
    assert "lots-of-workers" not in result.stderr and TOKEN not in result.stderr
    assert "DISCORD_TOKEN is not set" not in result.stderr


def test_settings_never_show_the_token() -> None:
    settings = Settings(_env_file=None, discord_token=TOKEN)
    for text in (repr(settings), str(settings), settings.model_dump_json(), repr(settings.model_dump())):
        assert TOKEN not in text
    assert settings.discord_token.get_secret_value() == TOKEN


def test_settings_read_dotenv_and_environment_wins(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, clean_env: None
) -> None:
    (tmp_path / ".env").write_text(
        f"DISCORD_TOKEN={TOKEN}\nSER_WORKERS=3\nDEV_GUILD_ID=\nlog_level=debug\n"
        "DISCORD_API_BASE_URL=http://127.0.0.1:9/api/v10/\n"
    )
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SER_WORKERS", "4")
    settings = Settings()  # type: ignore[call-arg]
    assert settings.discord_token.get_secret_value() == TOKEN
    assert settings.ser_workers == 4
    assert settings.dev_guild_id is None
    assert settings.log_level == "DEBUG" and settings.log_level_number == logging.DEBUG
    assert settings.discord_api_base_url == "http://127.0.0.1:9/api/v10"


def test_defaults_and_validation(clean_env: None) -> None:
    settings = Settings(_env_file=None, discord_token=TOKEN)
    assert settings.discord_api_base_url == DEFAULT_API_BASE_URL
    assert settings.ser_model_path == Path("models/ravdess-8class.joblib")
    assert settings.ser_workers == 2
    with pytest.raises(ValidationError):
        Settings(_env_file=None, discord_token=TOKEN, ser_workers=0)
    with pytest.raises(ValidationError):
        Settings(_env_file=None, discord_token=TOKEN, discord_api_base_url="discord.com/api")
    with pytest.raises(ValidationError):
        Settings(_env_file=None, discord_token=TOKEN, log_level="LOUD")


def test_redacting_formatter_hides_the_token_in_messages_arguments_and_tracebacks() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(RedactingFormatter([TOKEN]))
    logger = logging.getLogger("tests.redaction")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        logger.warning("token in message " + TOKEN)
        logger.warning("token as argument %s", TOKEN)
        try:
            raise RuntimeError(f"failed with {TOKEN}")
        except RuntimeError:
            logger.exception("boom")
    finally:
        logger.removeHandler(handler)
    text = stream.getvalue()
    assert TOKEN not in text
    assert text.count("[REDACTED]") == 3


def test_env_example_documents_every_setting_and_loads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, clean_env: None
) -> None:
    example = (ROOT / ".env.example").read_text()
    from bot.cogs.admin.settings import LifecycleSettings

    documented = {line.split("=", 1)[0].lower() for line in example.splitlines() if line and not line.startswith("#")}
    lifecycle = set(LifecycleSettings.model_fields) - {"ser_retrain_corrupt_labels"}  # test-only switch
    assert documented == set(Settings.model_fields) | lifecycle
    (tmp_path / ".env").write_text(example.replace("DISCORD_TOKEN=\n", f"DISCORD_TOKEN={TOKEN}\n"))
    monkeypatch.chdir(tmp_path)
    assert Settings() == Settings(_env_file=None, discord_token=TOKEN)  # type: ignore[call-arg]
    assert LifecycleSettings() == LifecycleSettings(_env_file=None)  # type: ignore[call-arg]


def test_database_settings_default_to_sqlite_in_data_dir_and_hide_the_password(
    tmp_path: Path, clean_env: None
) -> None:
    settings = Settings(_env_file=None, discord_token=TOKEN)
    assert settings.database_url is None and settings.sqlite_path == Path("data") / "ser.db"
    blank = Settings(_env_file=None, discord_token=TOKEN, database_url="  ", data_dir=tmp_path)
    assert blank.database_url is None and blank.sqlite_path == tmp_path / "ser.db"
    url = "postgresql://ser:pg-s3cret@db.example:5432/ser"
    pg = Settings(_env_file=None, discord_token=TOKEN, database_url=url)
    assert pg.database_url is not None and pg.database_url.get_secret_value() == url
    for text in (repr(pg), str(pg), pg.model_dump_json()):
        assert "pg-s3cret" not in text


def test_unsupported_database_url_is_named_but_not_echoed(tmp_path: Path) -> None:
    result = run_bot(tmp_path, DISCORD_TOKEN=TOKEN, DATABASE_URL="mysql://root:my-s3cret@localhost/ser")
    assert result.returncode == 2
    assert "DATABASE_URL" in result.stderr and "mysql" in result.stderr
    assert "my-s3cret" not in result.stderr and "Traceback" not in result.stderr
