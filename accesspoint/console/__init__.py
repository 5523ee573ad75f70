"""The admin console: server-rendered pages on a listener of their own, over a running access point (README.md)."""
