"""Alembic migrations of the message store, run by ``accesspoint.store.upgrade_to_head``."""
