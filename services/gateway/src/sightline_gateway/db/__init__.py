"""State of the gateway: SQLAlchemy 2 models, engine and migrations."""
