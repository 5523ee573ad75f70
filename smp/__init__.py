"""Dynamic discovery: SMP server and client, BDXL (built in the discovery issue)."""
