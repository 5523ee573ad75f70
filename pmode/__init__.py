"""P-Modes: the typed agreements that govern exchanges (built in the access-point issue)."""
