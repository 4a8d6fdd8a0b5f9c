"""Storage adapters: SQLAlchemy 2 tables, SQLite by default, any URL SQLAlchemy knows."""
