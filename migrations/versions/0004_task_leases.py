"""task leases: the job that holds or will run a task, until when its lease runs, and where it runs

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02 19:10:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0004'
down_revision: str | None = '0003'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table('tasks', schema=None) as batch_op:
        batch_op.add_column(sa.Column('job_id', sa.String(length=120), nullable=True))
        batch_op.add_column(sa.Column('lease_expires_at', sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column('runner', sa.String(length=200), nullable=True))
        batch_op.create_index('ix_tasks_status', ['status'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('tasks', schema=None) as batch_op:
        batch_op.drop_index('ix_tasks_status')
        batch_op.drop_column('runner')
        batch_op.drop_column('lease_expires_at')
        batch_op.drop_column('job_id')
