"""The key archive: holders' private keys wrapped under a master key in an HSM, released only to the holder.

See ``THREAT_MODEL.md`` beside this file for who can read what, and ``service.py`` for the rules.
"""
