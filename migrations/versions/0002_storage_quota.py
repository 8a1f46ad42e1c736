"""Per-team storage quota: team limits, each job's input bytes, deletable datasets.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01

Existing teams get the defaults new teams get (100 GiB, 100 datasets). Existing jobs
count 0 input bytes: their sizes were never recorded, and their inputs go with
``qat admin gc`` as before.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

DEFAULT_STORAGE_BYTES = 100 << 30
DEFAULT_DATASETS = 100


def upgrade() -> None:
    with op.batch_alter_table("teams") as teams:
        teams.add_column(
            sa.Column("max_storage_bytes", sa.BigInteger(), nullable=False, server_default=str(DEFAULT_STORAGE_BYTES))
        )
        teams.add_column(sa.Column("max_datasets", sa.Integer(), nullable=False, server_default=str(DEFAULT_DATASETS)))
    with op.batch_alter_table("jobs") as jobs:
        jobs.add_column(sa.Column("inputs_bytes", sa.BigInteger(), nullable=False, server_default="0"))
    with op.batch_alter_table("datasets") as datasets:
        datasets.add_column(sa.Column("deleted_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("datasets") as datasets:
        datasets.drop_column("deleted_at")
    with op.batch_alter_table("jobs") as jobs:
        jobs.drop_column("inputs_bytes")
    with op.batch_alter_table("teams") as teams:
        teams.drop_column("max_datasets")
        teams.drop_column("max_storage_bytes")
