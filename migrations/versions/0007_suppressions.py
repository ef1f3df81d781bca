"""suppressions: each carried-out erasure, kept as keyed hashes and plans, to re-apply after a restore

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-07 18:10:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0007'
down_revision: str | None = '0006'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        'suppressions',
        sa.Column('id', sa.Uuid(), nullable=False),
        sa.Column('request_id', sa.Uuid(), nullable=True),
        sa.Column('erased_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('identities', sa.JSON(), nullable=False),
        sa.Column('stores', sa.JSON(), nullable=False),
        sa.Column('replays', sa.Integer(), nullable=False),
        sa.Column('last_replayed_at', sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(['request_id'], ['requests.id'], name=op.f('fk_suppressions_request_id_requests'),
                                ondelete='SET NULL'),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_suppressions')),
    )
    op.create_index('ix_suppressions_erased_at', 'suppressions', ['erased_at'], unique=False)


def downgrade() -> None:
    op.drop_index('ix_suppressions_erased_at', table_name='suppressions')
    op.drop_table('suppressions')
