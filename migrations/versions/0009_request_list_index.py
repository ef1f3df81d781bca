"""request list index: keyset pages of GET /api/v1/requests by (due_at, id) without a sort

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-07 19:20:00.000000
"""

from collections.abc import Sequence

from alembic import op

revision: str = '0009'
down_revision: str | None = '0008'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index('ix_requests_due_at_id', 'requests', ['due_at', 'id'], unique=False)


def downgrade() -> None:
    op.drop_index('ix_requests_due_at_id', table_name='requests')
