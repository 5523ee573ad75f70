"""WS-Security for eDelivery AS4 1.15 and 2.0: signing, encryption, token references, keys, trust.

Pure functions over lxml trees, bytes and ``cryptography`` keys (sans-I/O, like the core): revocation
lookups go through a small fetcher interface the shell provides.
"""
