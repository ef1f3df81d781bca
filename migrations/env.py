"""Alembic environment: the URL comes from dsr's settings (or the caller), never from alembic.ini."""

from __future__ import annotations

from alembic import context
from sqlalchemy import pool

from dsr.config import Settings
from dsr.db import make_engine
from dsr.models import Base
from dsr.models.base import UtcDateTime

config = context.config
target_metadata = Base.metadata


def _url() -> str:
    return config.attributes.get("url") or Settings.from_env().sqlalchemy_url


def render_item(type_: str, obj: object, _ctx: object) -> str | bool:
    # Migrations stay free of dsr imports: UtcDateTime is a plain timezone-aware DateTime in SQL.
    if type_ == "type" and isinstance(obj, UtcDateTime):
        return "sa.DateTime(timezone=True)"
    return False


def run_migrations_offline() -> None:
    context.configure(url=_url(), target_metadata=target_metadata, literal_binds=True, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    engine = make_engine(_url(), create_folder=True, poolclass=pool.NullPool)
    with engine.connect() as connection:
        # render_as_batch: SQLite can only change tables by copying them; Alembic's batch mode does that.
        context.configure(connection=connection, target_metadata=target_metadata, render_as_batch=True,
                          compare_type=True, render_item=render_item)
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
