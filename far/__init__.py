"""FaR, the routing register of Swedish digital post: who has a mailbox, at which operator, refusing whom.

The access point's router uses ``far.service.FarService.is_reachable(sender_orgnr, recipients)`` in-process, or
``far.client.FarClient`` (same method, over HTTP) when FaR runs apart; see far/README.md.
"""
