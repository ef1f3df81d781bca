"""download links: the artifact's current link and the downloads completed through it

A DPO can issue a new link once the old one has expired or was used as often as allowed; the new
link's number is signed into it, and the download limit counts per link, so older links stay dead.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-07 14:30:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0005'
down_revision: str | None = '0004'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table('artifacts', schema=None) as batch_op:
        batch_op.add_column(sa.Column('link', sa.Integer(), server_default='1', nullable=False))
        batch_op.add_column(sa.Column('link_downloads', sa.Integer(), server_default='0', nullable=False))
    # Links issued before this migration are link 1, and every download so far went through them.
    op.execute(sa.text('UPDATE artifacts SET link_downloads = downloads'))


def downgrade() -> None:
    with op.batch_alter_table('artifacts', schema=None) as batch_op:
        batch_op.drop_column('link_downloads')
        batch_op.drop_column('link')
