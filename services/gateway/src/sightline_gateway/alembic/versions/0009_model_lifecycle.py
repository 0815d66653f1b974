"""Model lifecycle: the serving version per model, promotion decisions, and shadow scores.

Revision ID: 0009
Revises: 0008
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "model_serving",
        sa.Column("model_name", sa.String(100), primary_key=True),
        sa.Column("serving_version", sa.Integer, nullable=False),
        sa.Column("previous_version", sa.Integer, nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_by", sa.String(200), nullable=False),
    )
    op.create_table(
        "model_decisions",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("model_name", sa.String(100), nullable=False),
        sa.Column("action", sa.String(16), nullable=False),
        sa.Column("from_version", sa.Integer, nullable=False),
        sa.Column("to_version", sa.Integer, nullable=False),
        sa.Column("applied", sa.Boolean, nullable=False),
        sa.Column("actor", sa.String(200), nullable=False),
        sa.Column("record", sa.JSON, nullable=False),
        sa.Column("digest", sa.String(64), nullable=False),
    )
    op.create_index("ix_model_decisions_at", "model_decisions", ["at"])
    op.create_index("ix_model_decisions_model_name", "model_decisions", ["model_name"])
    op.create_table(
        "shadow_scores",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("tenant_id", sa.String(64), nullable=False),
        sa.Column("study_id", sa.String(36), nullable=False),
        sa.Column("model_name", sa.String(100), nullable=False),
        sa.Column("serving_version", sa.Integer, nullable=False),
        sa.Column("candidate_version", sa.Integer, nullable=False),
        sa.Column("serving_probability", sa.Float, nullable=False),
        sa.Column("candidate_probability", sa.Float, nullable=False),
        sa.Column("serving_threshold", sa.Float, nullable=False),
        sa.Column("candidate_threshold", sa.Float, nullable=False),
        sa.Column("disagree", sa.Boolean, nullable=False),
        sa.UniqueConstraint(
            "study_id", "model_name", "candidate_version", name="uq_shadow_study_model_version"
        ),
    )
    op.create_index("ix_shadow_scores_tenant_id", "shadow_scores", ["tenant_id"])
    op.create_index("ix_shadow_model_at", "shadow_scores", ["model_name", "candidate_version", "at"])


def downgrade() -> None:
    op.drop_table("shadow_scores")
    op.drop_table("model_decisions")
    op.drop_table("model_serving")
