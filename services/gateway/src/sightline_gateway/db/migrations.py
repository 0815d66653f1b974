"""Which Alembic revision the database is at, against the revisions this gateway knows.

A gateway must not run on a schema newer than its own migrations (after ``helm rollback`` across
a migration, or an old replica restarting during an upgrade): it would read and write columns it
does not know. It refuses to start and says what to do instead.
"""

from __future__ import annotations

from pathlib import Path

from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util import CommandError
from sqlalchemy.engine import Connection

ALEMBIC_DIR = Path(__file__).resolve().parent.parent / "alembic"

#: PostgreSQL advisory lock taken around every migration run: the Helm hook Job's
#: (charts/sightline/files/migrate.py, same id) and a gateway's own at start-up take turns.
MIGRATION_LOCK_ID = 0x5167_6874_6C69_6E65 & 0x7FFF_FFFF_FFFF_FFFF


class SchemaMismatch(RuntimeError):
    """The database's schema revision is not the one this gateway can run on."""


def alembic_config(connection: Connection | None = None, schema: str | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(ALEMBIC_DIR))
    config.attributes["connection"] = connection
    config.attributes["schema"] = schema
    return config


def revisions(connection: Connection, schema: str | None) -> tuple[set[str], str]:
    """(the database's current revisions, this gateway's head revision)."""
    script = ScriptDirectory.from_config(alembic_config())
    head = script.get_current_head()
    assert head is not None, "the gateway ships at least one migration"
    context = MigrationContext.configure(connection, opts={"version_table_schema": schema})
    return set(context.get_current_heads()), head


def _known(script: ScriptDirectory, revision: str) -> bool:
    try:
        return script.get_revision(revision) is not None
    except CommandError:  # "Can't locate revision identified by ..."
        return False


def refuse_newer(connection: Connection, schema: str | None) -> None:
    """Raise :class:`SchemaMismatch` when the database is at a revision this gateway lacks."""
    current, head = revisions(connection, schema)
    script = ScriptDirectory.from_config(alembic_config())
    unknown = sorted(r for r in current if not _known(script, r))
    if unknown:
        raise SchemaMismatch(
            f"database schema is at revision {', '.join(unknown)}, newer than this gateway knows "
            f"(its newest is {head}): a newer release migrated it. Run the newer gateway image, or "
            "downgrade the schema with that image (alembic downgrade) before rolling back"
        )


def require_head(connection: Connection, schema: str | None) -> None:
    """Raise :class:`SchemaMismatch` unless the database is at exactly this gateway's head."""
    refuse_newer(connection, schema)
    current, head = revisions(connection, schema)
    if current != {head}:
        at = ", ".join(sorted(current)) or "no revision (empty database)"
        raise SchemaMismatch(
            f"database schema is at {at}; this gateway needs revision {head} and does not migrate "
            "at start (migrate_on_start=false): run the migration Job (helm upgrade runs it)"
        )
