"""Dynamic discovery: the SMP server (Peppol, OASIS SMP 1.0 and 2.0) and the BDXL + SMP client (see README.md).

The access point calls ``smp.client.DiscoveryClient.discover``; ``accesspoint smp serve`` runs ``smp.server``.
"""
