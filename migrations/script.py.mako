"""${message}

Revision ID: ${up_revision}
Revises: ${down_revision | comma,n}
Create Date: ${create_date}

Objects are created as ``lake_owner`` (SET ROLE below), so new tables, sequences, views and
functions get their grants from the default privileges set in 0001_initial; anything else
(DELETE for the writer, revoking EXECUTE from PUBLIC, read-only views) is granted here.
No COMMIT inside a revision: the whole upgrade chain is one transaction.
"""

from __future__ import annotations

from collections.abc import Sequence

import geoalchemy2
import sqlalchemy as sa
from alembic import op
${imports if imports else ""}
from db.schema import OWNER_ROLE

# revision identifiers, used by Alembic.
revision: str = ${repr(up_revision)}
down_revision: str | Sequence[str] | None = ${repr(down_revision)}
branch_labels: str | Sequence[str] | None = ${repr(branch_labels)}
depends_on: str | Sequence[str] | None = ${repr(depends_on)}


def upgrade() -> None:
    op.execute(f"SET ROLE {OWNER_ROLE}")
    ${upgrades if upgrades else "pass"}
    op.execute("RESET ROLE")


def downgrade() -> None:
    ${downgrades if downgrades else "pass"}
