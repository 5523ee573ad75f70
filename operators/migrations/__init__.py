"""Alembic migrations of the operator's mailboxes, run by ``operators.mailbox.MailboxStore.create`` (version table
``operator_alembic_version``).

New revisions are written by hand after the pattern of ``versions/0001_initial.py``, columns spelled out rather
than imported from ``operators/mailbox.py``: a revision must keep creating what it created then.
"""
