"""Bot configuration from the environment and an optional ``.env`` file.

Every variable is documented in ``.env.example`` at the repository root.
Environment variables win over ``.env``; names are case-insensitive.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["Settings", "DEFAULT_API_BASE_URL", "DEFAULT_MODEL_PATH", "DEFAULT_DATA_DIR", "SQLITE_FILENAME"]

#: Discord's REST API, version 10 (https://discord.com/developers/docs/reference#api-versioning).
DEFAULT_API_BASE_URL = "https://discord.com/api/v10"
#: The shipped RAVDESS 8-class model, relative to the working directory.
DEFAULT_MODEL_PATH = Path("models/ravdess-8class.joblib")
#: Where the bot keeps its files (the default SQLite database), relative to the working directory.
DEFAULT_DATA_DIR = Path("data")
#: Name of the default SQLite database file inside ``DATA_DIR``.
SQLITE_FILENAME = "ser.db"


class Settings(BaseSettings):
    """Validated bot settings.

    Attributes
    ----------
    discord_token : SecretStr
        ``DISCORD_TOKEN``, the bot token (required). Its ``repr``/``str`` is
        masked; call ``get_secret_value()`` only to hand it to discord.py.
    discord_api_base_url : str
        ``DISCORD_API_BASE_URL``, REST base URL (default Discord's v10 API).
        Point it at a REST proxy or, in tests, at a fake Discord; the gateway
        URL then comes from ``GET {base}/gateway/bot``.
    dev_guild_id : int or None
        ``DEV_GUILD_ID``: sync application commands to this guild only
        (instant updates while developing) instead of globally.
    sync_commands : bool
        ``SYNC_COMMANDS``: overwrite the registered application commands at
        start-up (default true).
    ser_owner_ids : str
        ``SER_OWNER_IDS``: comma-separated Discord user ids of the bot's
        operators, who may use the model life-cycle commands (``/retrain``,
        ``/model activate``, ``/model rollback``) anywhere; the application's
        owner (or team) always may. See :attr:`owner_ids`.
    ser_admin_guild_id : int or None
        ``SER_ADMIN_GUILD_ID``: the operators' server. When set, the life-cycle
        commands are registered in that server only, and its members with
        Manage Server may use them too; Manage Server in any other server
        never allows them.
    ser_model_path : Path
        ``SER_MODEL_PATH``, model bundle (``.joblib`` with its ``.json``
        sidecar); relative paths are relative to the working directory.
    ser_workers : int
        ``SER_WORKERS``, analyses that run at once (worker threads or
        processes, default 2).
    ser_worker_mode : {"process", "thread"}
        ``SER_WORKER_MODE``: run analyses in worker processes (default;
        feature extraction holds the GIL, so threads barely add throughput)
        or in threads of the bot process (less memory in all, one process).
        See :class:`ser_engine.service.EmotionService`.
    ser_max_pending : int
        ``SER_MAX_PENDING``, analyses accepted at once, running or waiting;
        more are refused as busy (default 16).
    ser_request_timeout_s : float
        ``SER_REQUEST_TIMEOUT_S``, seconds one analysis may take, waiting
        included (default 30).
    ser_download_timeout_s : float
        ``SER_DOWNLOAD_TIMEOUT_S``, seconds to download one attachment (default 20).
    ser_max_downloads : int
        ``SER_MAX_DOWNLOADS``, attachments downloaded at once across the
        whole bot (default 4); more wait for a free slot (at most
        ``SER_REQUEST_TIMEOUT_S``, then "busy"). Each download
        holds at most ``SER_MAX_BYTES`` in memory, so this bounds the
        memory of downloads to ``SER_MAX_DOWNLOADS * SER_MAX_BYTES``.
    ser_max_bytes : int
        ``SER_MAX_BYTES``, largest attachment accepted, in bytes; checked on
        the attachment's reported size before downloading (default 25 MiB).
    ser_max_duration_s : float
        ``SER_MAX_DURATION_S``, longest recording accepted, in seconds (default 300).
    ser_user_max_notes : int
        ``SER_USER_MAX_NOTES``, voice notes one user may have analysed per
        cool-down window; more are refused politely (default 20).
    ser_user_cooldown_s : float
        ``SER_USER_COOLDOWN_S``, length of that sliding window in seconds (default 60).
    ser_channel_reply_burst : int
        ``SER_CHANNEL_REPLY_BURST``, replies sent at once in a quiet channel
        before pacing starts (default 5).
    ser_channel_replies_per_s : float
        ``SER_CHANNEL_REPLIES_PER_S``, replies per second per channel once the
        burst is used (default 1, i.e. Discord's usual 5 messages per 5 s).
    database_url : SecretStr or None
        ``DATABASE_URL``: where analyses, guild settings and opt-outs are
        stored, e.g. ``postgresql://user:password@host:5432/ser``
        (``postgres://`` and ``sqlite:///FILE`` work too). Unset or empty:
        an SQLite file ``ser.db`` in :attr:`data_dir`. Masked like the token
        because it may hold a password.
    data_dir : Path
        ``DATA_DIR``, folder of the default SQLite database (default
        ``./data``, created when needed).
    retention_sweep_minutes : float
        ``RETENTION_SWEEP_MINUTES``: how often stored analyses older than
        each server's retention are deleted (default every 60 minutes; the
        first sweep runs at start-up).
    log_level : str
        ``LOG_LEVEL``: DEBUG, INFO, WARNING, ERROR or CRITICAL (default INFO).
    ser_privacy_url : str
        ``SER_PRIVACY_URL``: where the full privacy text is published; ``/help``
        links it (default empty: ``/help`` summarises it and names ``/privacy``).
    log_format : {"text", "json"}
        ``LOG_FORMAT``: ``json`` writes every log line as one JSON object
        (see :mod:`bot.logging_setup`); default ``text``.
    ser_http_port : int or None
        ``SER_HTTP_PORT``: serve ``/healthz``, ``/readyz`` and ``/metrics`` on
        this TCP port (see :mod:`bot.health`); unset or empty: no HTTP server;
        0: any free port (tests).
    ser_http_host : str
        ``SER_HTTP_HOST``: address that server listens on (default ``127.0.0.1``;
        the Docker image sets ``0.0.0.0``).
    ser_broker_url : SecretStr or None
        ``SER_BROKER_URL`` (scale-out, README "Scaling out"): Redis URL of the
        broker, ``redis://host:6379/0``. Set: analyses go to ``ser worker``
        processes (:class:`ser_engine.distributed.client.BrokerService`) and the
        per-user cool-downs and per-channel pacing are shared through it by
        every bot process. Unset: in-process workers (``SER_WORKERS``), limits
        per process. Masked: it may hold a password.
    ser_broker_timeout_s : float
        ``SER_BROKER_TIMEOUT_S``: seconds one analysis may take through the
        broker, queue included (default 60; above the 20 s after which a job
        whose worker died is delivered again).
    ser_broker_queue : str
        ``SER_BROKER_QUEUE``: the broker's queue name (default ``ser:analyses``).
    shard_count : int, "auto" or None
        ``SHARD_COUNT``: total gateway shards of the bot (all processes);
        ``auto`` asks Discord for its recommended count (``GET /gateway/bot``);
        unset: one connection without sharding (enough below 2 500 servers).
    shard_ids : str
        ``SHARD_IDS``: comma-separated shard ids this process runs (default:
        all of ``SHARD_COUNT``); needs a numeric ``SHARD_COUNT``.
    """

    model_config = SettingsConfigDict(
        env_file=".env",
        env_file_encoding="utf-8",
        case_sensitive=False,
        extra="ignore",
        hide_input_in_errors=True,
    )

    discord_token: SecretStr
    discord_api_base_url: str = DEFAULT_API_BASE_URL
    dev_guild_id: int | None = None
    sync_commands: bool = True
    ser_owner_ids: str = ""
    ser_admin_guild_id: int | None = None
    ser_model_path: Path = DEFAULT_MODEL_PATH
    ser_workers: int = Field(2, ge=1, le=64)
    ser_worker_mode: Literal["process", "thread"] = "process"
    ser_max_pending: int = Field(16, ge=1)
    ser_request_timeout_s: float = Field(30.0, gt=0)
    ser_download_timeout_s: float = Field(20.0, gt=0)
    ser_max_downloads: int = Field(4, ge=1, le=64)
    ser_max_bytes: int = Field(25 * 2**20, gt=0)
    ser_max_duration_s: float = Field(300.0, gt=0)
    ser_user_max_notes: int = Field(20, ge=1)
    ser_user_cooldown_s: float = Field(60.0, gt=0)
    ser_channel_reply_burst: int = Field(5, ge=1)
    ser_channel_replies_per_s: float = Field(1.0, gt=0)
    database_url: SecretStr | None = None
    data_dir: Path = DEFAULT_DATA_DIR
    retention_sweep_minutes: float = Field(60.0, ge=1.0, le=1440.0)
    log_level: str = "INFO"
    ser_privacy_url: str = ""
    log_format: Literal["text", "json"] = "text"
    ser_http_port: int | None = Field(None, ge=0, le=65535)
    ser_http_host: str = "127.0.0.1"

    @field_validator("log_format", mode="before")
    @classmethod
    def _format_lower(cls, value: object) -> object:
        return value.strip().lower() if isinstance(value, str) else value

    @field_validator("ser_http_port", mode="before")
    @classmethod
    def _blank_port_is_none(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value

    # --- Scale-out (issue 15): broker, shards, shared limits. Kept together; see README "Scaling out".
    ser_broker_url: SecretStr | None = None
    ser_broker_timeout_s: float = Field(60.0, gt=0)
    ser_broker_queue: str = "ser:analyses"
    shard_count: int | Literal["auto"] | None = None
    shard_ids: str = ""

    @field_validator("ser_broker_url", mode="before")
    @classmethod
    def _blank_broker_is_none(cls, value: object) -> object:
        if isinstance(value, SecretStr):
            value = value.get_secret_value()
        if isinstance(value, str) and not value.strip():
            return None
        if isinstance(value, str) and not value.strip().startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("SER_BROKER_URL must be a Redis URL (redis://host:6379/0)")
        return value

    @field_validator("shard_count", mode="before")
    @classmethod
    def _shard_count(cls, value: object) -> object:
        if isinstance(value, str):
            value = value.strip().lower()
            if not value:
                return None
            if value != "auto":
                if not value.isdigit() or int(value) < 1:
                    raise ValueError("SHARD_COUNT must be a positive number or 'auto'")
                return int(value)
        return value

    @field_validator("shard_ids")
    @classmethod
    def _shard_ids(cls, value: str, info: Any) -> str:
        parts = [part.strip() for part in value.split(",") if part.strip()]
        if not all(part.isdigit() for part in parts):
            raise ValueError("SHARD_IDS must be shard numbers separated by commas")
        count = info.data.get("shard_count")
        if parts and not isinstance(count, int):
            raise ValueError("SHARD_IDS needs a numeric SHARD_COUNT")
        if parts and any(int(part) >= count for part in parts):
            raise ValueError(f"SHARD_IDS must be below SHARD_COUNT ({count})")
        return ",".join(parts)

    @property
    def shard_id_list(self) -> list[int] | None:
        """:attr:`shard_ids` as numbers (``None``: all shards of :attr:`shard_count`)."""
        return [int(part) for part in self.shard_ids.split(",")] if self.shard_ids else None

    @property
    def sharded(self) -> bool:
        """Whether the bot runs as :class:`discord.ext.commands.AutoShardedBot` (``SHARD_COUNT`` set)."""
        return self.shard_count is not None

    @field_validator("discord_token")
    @classmethod
    def _token_not_blank(cls, value: SecretStr) -> SecretStr:
        stripped = value.get_secret_value().strip()
        if not stripped:
            raise ValueError("DISCORD_TOKEN is empty")
        return SecretStr(stripped)

    @field_validator("discord_api_base_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        value = value.strip().rstrip("/")
        if not value.startswith(("http://", "https://")):
            raise ValueError("DISCORD_API_BASE_URL must start with http:// or https://")
        return value

    @field_validator("dev_guild_id", "ser_admin_guild_id", mode="before")
    @classmethod
    def _blank_is_none(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("ser_owner_ids")
    @classmethod
    def _user_ids(cls, value: str) -> str:
        parts = [part.strip() for part in value.split(",") if part.strip()]
        if not all(part.isdigit() for part in parts):
            # Refused rather than skipped: a typo would otherwise silently lock an operator out.
            raise ValueError("SER_OWNER_IDS must be Discord user ids (numbers) separated by commas")
        return ",".join(parts)

    @field_validator("database_url", mode="before")
    @classmethod
    def _blank_url_is_none(cls, value: object) -> object:
        if isinstance(value, SecretStr):
            value = value.get_secret_value()
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("database_url")
    @classmethod
    def _supported_database(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None:
            return None
        from bot.storage.urls import normalise_database_url

        url = value.get_secret_value().strip()
        normalise_database_url(url)  # ValueError names the problem, never the URL (it may hold a password)
        return SecretStr(url)

    @field_validator("ser_worker_mode", mode="before")
    @classmethod
    def _mode_lower(cls, value: object) -> object:
        return value.strip().lower() if isinstance(value, str) else value

    @field_validator("log_level")
    @classmethod
    def _known_level(cls, value: str) -> str:
        level = value.strip().upper()
        if level not in {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}:
            raise ValueError("LOG_LEVEL must be one of DEBUG, INFO, WARNING, ERROR, CRITICAL")
        return level

    @property
    def owner_ids(self) -> frozenset[int]:
        """:attr:`ser_owner_ids` as a set of user ids (empty when unset)."""
        return frozenset(int(part) for part in self.ser_owner_ids.split(",") if part)

    @property
    def sqlite_path(self) -> Path:
        """The default SQLite database file, ``DATA_DIR/ser.db`` (used when ``DATABASE_URL`` is unset)."""
        return self.data_dir / SQLITE_FILENAME

    @property
    def log_level_number(self) -> int:
        """The ``logging`` level number of :attr:`log_level`."""
        return logging.getLevelName(self.log_level)
