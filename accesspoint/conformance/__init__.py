"""The EC conformance test service: an EC-style test bed drives the access point through it (Submit, Deliver,
Notify), and the test P-Modes it expects (SIMPLE_ONEWAY, SIMPLE_TWOWAY, ONEWAY_RETRY, ONEWAY_ONLY_SIGN, PING).

``protocol`` is the backend message format (sans-I/O), ``service`` the adapter ``accesspoint conformance serve``
runs against the access point's REST API and webhooks, ``pmodes`` writes the test P-Modes.
"""
