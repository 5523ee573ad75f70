"""Alembic migrations of the SMP's tables, run by ``smp.store.SmpStore.open`` (version table
``smp_alembic_version``).

New revisions are written by hand after the pattern of ``versions/0001_initial.py``, columns spelled out rather
than imported from ``smp/store.py``: a revision must keep creating what it created then.
"""
