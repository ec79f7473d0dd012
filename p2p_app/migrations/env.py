"""Alembic's environment: migrations run on the connection :func:`p2p_app.migrations.upgrade` hands over."""

from alembic import context

connection = context.config.attributes["connection"]
# render_as_batch: SQLite alters a table by copying it, which Alembic's batch mode does for us.
context.configure(connection=connection, render_as_batch=True, compare_type=True)
with context.begin_transaction():
    context.run_migrations()
