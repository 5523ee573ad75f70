"""Alembic revisions of the mailing tables (version table ``mailing_alembic_version``)."""
