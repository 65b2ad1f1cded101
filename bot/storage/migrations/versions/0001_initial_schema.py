"""Initial schema: analyses, guild settings, opt-outs, alert log, speaker stats, feedback.

Revision ID: 0001
Revises:
Create Date: 2026-11-22

Written from ``alembic revision --autogenerate`` against
:mod:`bot.storage.models`, with the models' ``UTCDateTime`` decorator spelled
as its storage type ``DateTime(timezone=True)`` so that the migration does not
depend on later versions of the models.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
_TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "analyses",
        sa.Column("id", _ID, autoincrement=True, nullable=False),
        sa.Column("guild_id", sa.BigInteger(), nullable=True),
        sa.Column("channel_id", sa.BigInteger(), nullable=False),
        sa.Column("user_id", sa.BigInteger(), nullable=False),
        sa.Column("message_id", sa.BigInteger(), nullable=False),
        sa.Column("created_at", _TS, nullable=False),
        sa.Column("label", sa.String(length=32), nullable=False),
        sa.Column("confidence", sa.Float(), nullable=False),
        sa.Column("probabilities", sa.JSON(), nullable=False),
        sa.Column("model_version", sa.String(length=128), nullable=False),
        sa.Column("duration_s", sa.Float(), nullable=False),
        sa.CheckConstraint("confidence >= 0 AND confidence <= 1", name=op.f("ck_analyses_confidence_range")),
        sa.CheckConstraint("duration_s >= 0", name=op.f("ck_analyses_duration_nonneg")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_analyses")),
    )
    op.create_index("ix_analyses_channel_created", "analyses", ["channel_id", "created_at"])
    op.create_index(op.f("ix_analyses_created_at"), "analyses", ["created_at"])
    op.create_index("ix_analyses_guild_created", "analyses", ["guild_id", "created_at"])
    op.create_index(op.f("ix_analyses_user_id"), "analyses", ["user_id"])

    op.create_table(
        "guild_settings",
        sa.Column("guild_id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("auto_analyse", sa.Boolean(), nullable=False),
        sa.Column("allowed_channels", sa.JSON(), nullable=False),
        sa.Column("denied_channels", sa.JSON(), nullable=False),
        sa.Column("reply_mode", sa.String(length=8), nullable=False),
        sa.Column("modlog_channel_id", sa.BigInteger(), nullable=True),
        sa.Column("alert_emotions", sa.JSON(), nullable=False),
        sa.Column("alert_threshold", sa.Float(), nullable=False),
        sa.Column("alert_cooldown_s", sa.Integer(), nullable=False),
        sa.Column("retention_days", sa.Integer(), nullable=False),
        sa.Column("updated_at", _TS, nullable=False),
        sa.CheckConstraint("reply_mode IN ('reply', 'dm')", name=op.f("ck_guild_settings_reply_mode")),
        sa.CheckConstraint("alert_cooldown_s >= 0", name=op.f("ck_guild_settings_cooldown_nonneg")),
        sa.CheckConstraint(
            "alert_threshold >= 0 AND alert_threshold <= 1", name=op.f("ck_guild_settings_threshold_range")
        ),
        sa.CheckConstraint("retention_days >= 1", name=op.f("ck_guild_settings_retention_positive")),
        sa.PrimaryKeyConstraint("guild_id", name=op.f("pk_guild_settings")),
    )

    op.create_table(
        "user_optout",
        sa.Column("user_id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("created_at", _TS, nullable=False),
        sa.PrimaryKeyConstraint("user_id", name=op.f("pk_user_optout")),
    )

    op.create_table(
        "alert_log",
        sa.Column("guild_id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("channel_id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("user_id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("last_alert_at", _TS, nullable=False),
        sa.PrimaryKeyConstraint("guild_id", "channel_id", "user_id", name=op.f("pk_alert_log")),
    )
    op.create_index(op.f("ix_alert_log_user_id"), "alert_log", ["user_id"])

    op.create_table(
        "speaker_stats",
        sa.Column("user_id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("feature_config_version", sa.String(length=64), nullable=False),
        sa.Column("n", sa.BigInteger(), nullable=False),
        sa.Column("n_features", sa.Integer(), nullable=False),
        sa.Column("mean", sa.LargeBinary(), nullable=False),
        sa.Column("m2", sa.LargeBinary(), nullable=False),
        sa.Column("updated_at", _TS, nullable=False),
        sa.PrimaryKeyConstraint("user_id", "feature_config_version", name=op.f("pk_speaker_stats")),
    )

    op.create_table(
        "feedback",
        sa.Column("id", _ID, autoincrement=True, nullable=False),
        sa.Column("user_id", sa.BigInteger(), nullable=False),
        sa.Column("guild_id", sa.BigInteger(), nullable=True),
        sa.Column("message_id", sa.BigInteger(), nullable=False),
        sa.Column("label", sa.String(length=32), nullable=False),
        sa.Column("feature_config_version", sa.String(length=64), nullable=False),
        sa.Column("n_features", sa.Integer(), nullable=False),
        sa.Column("features", sa.LargeBinary(), nullable=False),
        sa.Column("consent", sa.Boolean(), nullable=False),
        sa.Column("created_at", _TS, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_feedback")),
    )
    op.create_index(op.f("ix_feedback_user_id"), "feedback", ["user_id"])
    op.create_index("ix_feedback_version_consent", "feedback", ["feature_config_version", "consent"])

    op.create_table(
        "feedback_consent",
        sa.Column("user_id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("consent", sa.Boolean(), nullable=False),
        sa.Column("decided_at", _TS, nullable=False),
        sa.PrimaryKeyConstraint("user_id", name=op.f("pk_feedback_consent")),
    )


def downgrade() -> None:
    op.drop_table("feedback_consent")
    op.drop_index("ix_feedback_version_consent", table_name="feedback")
    op.drop_index(op.f("ix_feedback_user_id"), table_name="feedback")
    op.drop_table("feedback")
    op.drop_table("speaker_stats")
    op.drop_index(op.f("ix_alert_log_user_id"), table_name="alert_log")
    op.drop_table("alert_log")
    op.drop_table("user_optout")
    op.drop_table("guild_settings")
    op.drop_index(op.f("ix_analyses_user_id"), table_name="analyses")
    op.drop_index("ix_analyses_guild_created", table_name="analyses")
    op.drop_index(op.f("ix_analyses_created_at"), table_name="analyses")
    op.drop_index("ix_analyses_channel_created", table_name="analyses")
    op.drop_table("analyses")
