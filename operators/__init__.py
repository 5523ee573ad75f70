"""Adapters for Swedish mailbox operators (built in the digital-post issue)."""
