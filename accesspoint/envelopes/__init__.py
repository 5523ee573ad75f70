"""Envelopes and end-to-end receipt formats: pure functions over bytes and lxml trees (sans-I/O)."""
