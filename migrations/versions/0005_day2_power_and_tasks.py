"""day-2 operations: power state, task, the generation a task waits for, the reboot's Semaphore task

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02 07:40:00.000000

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "0005"
down_revision: str | Sequence[str] | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("instances", schema=None) as batch_op:
        # Instances made before power control run: the module's `started` defaults to true.
        batch_op.add_column(
            sa.Column("power_state", sa.String(length=16), server_default="RUNNING", nullable=False)
        )
        batch_op.add_column(sa.Column("task", sa.String(length=16), nullable=True))
        batch_op.add_column(sa.Column("task_generation", sa.BigInteger(), nullable=True))
        batch_op.add_column(sa.Column("action_task_id", sa.BigInteger(), nullable=True))
    with op.batch_alter_table("instance_events", schema=None) as batch_op:
        batch_op.add_column(sa.Column("power_state", sa.String(length=16), nullable=True))
        batch_op.add_column(sa.Column("task", sa.String(length=16), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("instance_events", schema=None) as batch_op:
        batch_op.drop_column("task")
        batch_op.drop_column("power_state")
    with op.batch_alter_table("instances", schema=None) as batch_op:
        batch_op.drop_column("action_task_id")
        batch_op.drop_column("task_generation")
        batch_op.drop_column("task")
        batch_op.drop_column("power_state")
