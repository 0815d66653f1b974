"""Helm pre-install/pre-upgrade hook: bring the gateway's database to the image's Alembic head.

Runs in the gateway image, before any new gateway pod starts, so migrations happen once per
release change rather than in every replica. On PostgreSQL a session-level advisory lock makes
concurrent runs (two upgrades, a replica starting meanwhile with the same code) take turns.
Exits non-zero, with the reason, when the database cannot be migrated; Helm then stops the
upgrade and the running pods keep serving the old schema.
"""

import asyncio
import os
import sys

from sightline_gateway.db.engine import make_engine, migrate
from sqlalchemy import text

#: One lock id for Sightline migrations (pg_advisory_lock takes a bigint).
LOCK_ID = 0x5167_6874_6C69_6E65 & 0x7FFF_FFFF_FFFF_FFFF


async def main() -> int:
    url = os.environ["SIGHTLINE_GATEWAY_DATABASE_URL"]
    schema = os.environ.get("SIGHTLINE_GATEWAY_DATABASE_SCHEMA") or None
    engine = make_engine(url, schema)
    try:
        async with engine.connect() as lock:
            postgres = lock.dialect.name == "postgresql"
            if postgres:
                await lock.execute(text("SELECT pg_advisory_lock(:id)"), {"id": LOCK_ID})
            try:
                await migrate(engine, schema)
            finally:
                if postgres:
                    await lock.execute(text("SELECT pg_advisory_unlock(:id)"), {"id": LOCK_ID})
    finally:
        await engine.dispose()
    sys.stdout.write("database at the gateway image's migration head\n")
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
