"""password-protected packages: the request's delivery option and the artifact's sealed password

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-24 22:50:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0003'
down_revision: str | None = '0002'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table('requests', schema=None) as batch_op:
        batch_op.add_column(sa.Column('password_protected', sa.Boolean(), server_default=sa.false(), nullable=False))
    with op.batch_alter_table('artifacts', schema=None) as batch_op:
        batch_op.add_column(sa.Column('password_sealed', sa.LargeBinary(), nullable=True))
        batch_op.add_column(sa.Column('password_released_at', sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column('password_releases', sa.Integer(), server_default='0', nullable=False))


def downgrade() -> None:
    with op.batch_alter_table('artifacts', schema=None) as batch_op:
        batch_op.drop_column('password_releases')
        batch_op.drop_column('password_released_at')
        batch_op.drop_column('password_sealed')
    with op.batch_alter_table('requests', schema=None) as batch_op:
        batch_op.drop_column('password_protected')
