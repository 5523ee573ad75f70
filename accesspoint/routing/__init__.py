"""Routing: where an incoming message goes next, and where an outgoing one to a dynamic partner is sent.

- ``decision``: the sans-I/O router (header facts + FaR's answer -> RoutingDecision);
- ``outbound``: dynamic partners for the send workers (route records, BDXL + SMP, trust of the SMP's certificate);
- ``shell``: the thin async layer the access point calls (``Routing``);
- ``settings``: the server settings' ``discovery`` and ``routing`` sections.
"""
