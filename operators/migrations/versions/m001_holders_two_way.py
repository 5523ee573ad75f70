"""Joins the holders' revisions (``0002``) and the two-way branch (``t001``): one head again, so the next
revision has one parent and ``upgrade head`` names one revision. Nothing to change: the two branches touch
different tables."""

from __future__ import annotations

revision = "m001"
down_revision = ("0002", "t001")
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Nothing: a merge point."""


def downgrade() -> None:
    """Nothing: a merge point."""
