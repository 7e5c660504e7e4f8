"""Alembic environment: the server hands its connection in through config.attributes."""

from alembic import context

from hisguard.server.storage.models import Base

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
