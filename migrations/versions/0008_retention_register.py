"""retention register: what an erasure kept under a retention duty, and from when it may be erased

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-08 10:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0008'
down_revision: str | None = '0007'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('retention_register',
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.Column('request_id', sa.Uuid(), nullable=False),
    sa.Column('store', sa.String(length=100), nullable=False),
    sa.Column('table_name', sa.String(length=200), nullable=False),
    sa.Column('category', sa.String(length=100), nullable=False),
    sa.Column('rule', sa.String(length=100), nullable=False),
    sa.Column('provision', sa.String(length=300), nullable=True),
    sa.Column('records', sa.Integer(), nullable=False),
    sa.Column('kept_since', sa.Date(), nullable=False),
    sa.Column('erasable_on', sa.Date(), nullable=True),
    sa.Column('status', sa.String(length=20), nullable=False),
    sa.Column('erased_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['request_id'], ['requests.id'],
                            name=op.f('fk_retention_register_request_id_requests')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_retention_register'))
    )
    with op.batch_alter_table('retention_register', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_retention_register_request_id'), ['request_id'], unique=False)
        batch_op.create_index('ix_retention_register_status_erasable_on', ['status', 'erasable_on'], unique=False)
        batch_op.create_index('ix_retention_register_store_table_name', ['store', 'table_name'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('retention_register', schema=None) as batch_op:
        batch_op.drop_index('ix_retention_register_store_table_name')
        batch_op.drop_index('ix_retention_register_status_erasable_on')
        batch_op.drop_index(batch_op.f('ix_retention_register_request_id'))
    op.drop_table('retention_register')
