"""Indexes for operators' searches and the status: the time window, errors by state, conversations, partners; a
state or a partner within a time window (the console's common filters) read only their own rows."""

from __future__ import annotations

from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

INDEXES = {
    "ix_messages_created_at": ["created_at"],
    "ix_messages_state_updated_at": ["state", "updated_at"],
    "ix_messages_conversation_id": ["conversation_id"],
    "ix_messages_to_party_state_updated_at": ["to_party", "state", "updated_at"],
    "ix_messages_state_created_at": ["state", "created_at"],
    "ix_messages_to_party_created_at": ["to_party", "created_at"],
    "ix_messages_from_party_created_at": ["from_party", "created_at"],
}


def upgrade() -> None:
    """Create the indexes accesspoint/store/search.py reads through."""
    for name, columns in INDEXES.items():
        op.create_index(name, "messages", columns)


def downgrade() -> None:
    """Drop them."""
    for name in INDEXES:
        op.drop_index(name, table_name="messages")
