"""session revocations (back-channel logout, admin lockout)

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-02 07:00:00.000000

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "session_revocations",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("sub", sa.String(length=255), nullable=True),
        sa.Column("sid", sa.String(length=255), nullable=True),
        sa.Column("org_id", sa.String(length=64), nullable=True),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("jti", sa.String(length=255), nullable=True),
        sa.Column("source", sa.String(length=300), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_session_revocations")),
        sa.UniqueConstraint("jti", name=op.f("uq_session_revocations_jti")),
    )
    with op.batch_alter_table("session_revocations", schema=None) as batch_op:
        batch_op.create_index("ix_session_revocations_sub", ["sub"], unique=False)
        batch_op.create_index("ix_session_revocations_sid", ["sid"], unique=False)
        batch_op.create_index("ix_session_revocations_expires_at", ["expires_at"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("session_revocations", schema=None) as batch_op:
        batch_op.drop_index("ix_session_revocations_expires_at")
        batch_op.drop_index("ix_session_revocations_sid")
        batch_op.drop_index("ix_session_revocations_sub")
    op.drop_table("session_revocations")
