"""Alembic environment for cachedembed caches.

cachedembed runs these migrations itself when it opens a cache (see
``cachedembed.stores.migrate``), passing an open connection in
``config.attributes["connection"]``. Developers can also run Alembic by hand:
``alembic -c migrations/alembic.ini -x url=sqlite:///cache.db upgrade head``.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine

config = context.config


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        context.configure(connection=connection, render_as_batch=True)
        with context.begin_transaction():
            context.run_migrations()
        return
    url = context.get_x_argument(as_dictionary=True).get("url") or config.get_main_option(
        "sqlalchemy.url"
    )
    if not url:
        raise SystemExit("pass the cache URL: alembic -x url=sqlite:///path.db upgrade head")
    engine = create_engine(url)
    with engine.connect() as conn:
        context.configure(connection=conn, render_as_batch=True)
        with context.begin_transaction():
            context.run_migrations()


if context.is_offline_mode():
    raise SystemExit("cachedembed migrations run online only")
run_migrations_online()
