"""One result per (study, model): a study routed to several models gets a result from each.

``results.study_id`` is no longer unique; (study_id, model_name) is, and ``position`` keeps the
model's place in the study's routing order (0 for every existing result, each its study's only
one). SQLite names the old column constraint nowhere, so the batch copy names it by convention
to drop it; PostgreSQL named it ``results_study_id_key``.

Revision ID: 0008
Revises: 0007
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

#: Names SQLite's unnamed UNIQUE(study_id) on reflection, so that the batch copy can drop it.
NAMING = {"uq": "uq_%(table_name)s_%(column_0_name)s"}
PG_STUDY_UNIQUE = "results_study_id_key"


def upgrade() -> None:
    sqlite = op.get_bind().dialect.name == "sqlite"
    with op.batch_alter_table("results", naming_convention=NAMING if sqlite else None) as batch:
        batch.drop_constraint("uq_results_study_id" if sqlite else PG_STUDY_UNIQUE, type_="unique")
        batch.add_column(sa.Column("position", sa.Integer, nullable=False, server_default="0"))
        batch.create_unique_constraint("uq_results_study_model", ["study_id", "model_name"])
        batch.create_index("ix_results_study_id", ["study_id"])


def downgrade() -> None:
    """Back to one result per study: refused while a study has more than one (data would be lost)."""
    bind = op.get_bind()
    several = bind.execute(
        sa.text("SELECT count(*) FROM (SELECT study_id FROM results GROUP BY study_id HAVING count(*) > 1) s")
    ).scalar()
    if several:
        raise RuntimeError(
            f"{several} studies have results from several models; delete the extra results first"
        )
    sqlite = bind.dialect.name == "sqlite"
    with op.batch_alter_table("results") as batch:
        batch.drop_index("ix_results_study_id")
        batch.drop_constraint("uq_results_study_model", type_="unique")
        batch.drop_column("position")
        batch.create_unique_constraint("uq_results_study_id" if sqlite else PG_STUDY_UNIQUE, ["study_id"])
