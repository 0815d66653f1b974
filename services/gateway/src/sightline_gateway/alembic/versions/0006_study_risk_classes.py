"""Studies' re-identification risk classes (keyed hashes of their quasi-identifiers), for k-anonymity.

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "study_risk_classes",
        sa.Column("study_id", sa.String(36), sa.ForeignKey("studies.id"), primary_key=True),
        sa.Column("tenant_id", sa.String(64), sa.ForeignKey("tenants.id"), nullable=False),
        sa.Column("exact_class", sa.String(32), nullable=False),
        sa.Column("general_class", sa.String(32), nullable=False),
        sa.Column("generalised", sa.Boolean, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_study_risk_classes_exact", "study_risk_classes", ["tenant_id", "exact_class"])
    op.create_index("ix_study_risk_classes_general", "study_risk_classes", ["tenant_id", "general_class"])


def downgrade() -> None:
    op.drop_index("ix_study_risk_classes_general", "study_risk_classes")
    op.drop_index("ix_study_risk_classes_exact", "study_risk_classes")
    op.drop_table("study_risk_classes")
