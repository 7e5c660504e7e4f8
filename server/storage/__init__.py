"""Storage: the database schema (SQLAlchemy), engine set-up and Alembic migrations."""
