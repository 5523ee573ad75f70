"""What every HTTP service of the project is built from (the access point, FaR, the SMP, the mailbox operator).

- ``problems``: RFC 9457 problem documents and the one middleware that answers every failure with one;
- ``tokens``: bearer tokens with scopes, the Authorization header rules, WWW-Authenticate;
- ``settings``: TOML/YAML settings read field by field, every mistake reported with file and field;
- ``units``: the one grammar for durations (``5m``, ``1h30m``, ``PT5M``) and sizes (``64MiB``, ``1GB``);
- ``server``: start and stop aiohttp applications on their addresses, gracefully on SIGTERM/SIGINT;
- ``tls``: TLS 1.2+ contexts with configurable versions and ciphers;
- ``database``: async engines and Alembic migrations per schema, each with its own version table;
- ``webhooks``: the signature of webhook bodies, shared by the access point and its backends;
- ``metrics``, ``logs``, ``tracing``, ``observability``: Prometheus series and the admin listener's ``/metrics``,
  JSON log lines with the message in hand, OpenTelemetry spans and W3C ``traceparent``, and their settings.

It sits below every service and imports none of them (``tests/test_architecture.py``). Modules are imported one
by one (nothing here is imported eagerly), so reading settings does not load aiohttp or Alembic.
"""
