"""Alembic migrations of FaR's tables, run by ``far.model.upgrade_schema`` (version table ``far_alembic_version``).

New revisions are written by hand after the pattern of ``versions/0001_initial.py``, columns spelled out rather
than imported from ``far/model.py``: a revision must keep creating what it created then.
"""
