"""job listing indexes; job callbacks; id counters

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.create_index("ix_jobs_created", ["created_at", "id"], unique=False)
        batch_op.create_index(
            "ix_jobs_collection_created", ["collection_id", "created_at", "id"], unique=False
        )
    op.create_table(
        "job_callbacks",
        sa.Column("job_id", sa.String(length=32), nullable=False),
        sa.Column("url", sa.Text(), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("status_code", sa.Integer(), nullable=True),
        sa.Column("delivered_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["job_id"], ["jobs.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("job_id"),
    )
    with op.batch_alter_table("job_callbacks", schema=None) as batch_op:
        batch_op.create_index("ix_job_callbacks_due", ["state", "next_at"], unique=False)
    counters = op.create_table(
        "id_counters",
        sa.Column("table", sa.String(length=64), nullable=False),
        sa.Column("last_id", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("table"),
    )
    op.bulk_insert(counters, [{"table": "collections", "last_id": 0}])


def downgrade() -> None:
    op.drop_table("id_counters")
    with op.batch_alter_table("job_callbacks", schema=None) as batch_op:
        batch_op.drop_index("ix_job_callbacks_due")
    op.drop_table("job_callbacks")
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_index("ix_jobs_collection_created")
        batch_op.drop_index("ix_jobs_created")
