"""Fixtures the test suite and the benchmarks share (``tests/`` and ``bench/`` import them; the product never does).

- ``pki``: a throw-away PKI, certificates for every key type the profiles use, TLS certificates for loopback;
- ``services``: real PostgreSQL 15 and Redis servers on free loopback ports, in temporary folders;
- ``dnsserver``: dnsmasq answering a BDXL zone from NAPTR records;
- ``smp``: the project's SMP server with published metadata, as the discovery tests and ``bench smp`` use it;
- ``eid``: a development e-ID CA and holders' signatures over agreement texts;
- ``webhooks``: a loopback listener for an access point's webhook events, each with its signature checked.

``tests/test_architecture.py`` holds that nothing outside ``tests/`` and ``bench/`` imports this package, and that
it imports neither of them.
"""
