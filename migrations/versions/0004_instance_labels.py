"""instance labels and the index of orderBy NAME

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02 07:45:00.000000

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "0004"
down_revision: str | Sequence[str] | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "instance_labels",
        sa.Column("instance_id", sa.Uuid(), nullable=False),
        sa.Column("key", sa.String(length=63), nullable=False),
        sa.Column("value", sa.String(length=63), nullable=False),
        sa.ForeignKeyConstraint(
            ["instance_id"],
            ["instances.id"],
            name=op.f("fk_instance_labels_instance_id_instances"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("instance_id", "key", name=op.f("pk_instance_labels")),
    )
    with op.batch_alter_table("instance_labels", schema=None) as batch_op:
        batch_op.create_index("ix_instance_labels_key_value", ["key", "value"], unique=False)
    with op.batch_alter_table("instances", schema=None) as batch_op:
        batch_op.create_index("ix_instances_name_id", ["name", "id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("instances", schema=None) as batch_op:
        batch_op.drop_index("ix_instances_name_id")
    with op.batch_alter_table("instance_labels", schema=None) as batch_op:
        batch_op.drop_index("ix_instance_labels_key_value")
    op.drop_table("instance_labels")
