"""source kind 'repropagated': SAM 2 re-propagating a person's corrected frames

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-27 22:00:00

A round's re-propagated masklets (issue 5: corrected frames become mask prompts, SAM 2 propagates
the rest, the result goes to verification) are stored apart from the round's first predictions,
which the effort accounting and the correction tasks refer to. Only the CHECK constraints of the
two columns that use the shared source-kind enum change (batch mode rebuilds the tables on SQLite).
Frozen history: alembic and sqlalchemy only.
"""
from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = '0002'
down_revision: str | None = '0001'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_OLD = "source_kind IN ('model', 'human', 'scripted_annotator', 'ground_truth')"
_NEW = "source_kind IN ('model', 'human', 'scripted_annotator', 'ground_truth', 'repropagated')"
_TABLES = ('masklets', 'captions')


def _swap(check: str) -> None:
    for table in _TABLES:
        with op.batch_alter_table(table) as batch:
            batch.drop_constraint(op.f(f'ck_{table}_source_kind'), type_='check')
            batch.create_check_constraint(op.f(f'ck_{table}_source_kind'), check)


def upgrade() -> None:
    _swap(_NEW)


def downgrade() -> None:
    # Rows of the new kind cannot be expressed in the old schema: drop them first.
    op.execute("DELETE FROM masklets WHERE source_kind = 'repropagated'")
    op.execute("DELETE FROM captions WHERE source_kind = 'repropagated'")
    _swap(_OLD)
