"""Benchmarks of the sans-I/O message core (``make bench``; never part of ``make test``).

- ``bench.small``: build + parse of a ~4 KB eDelivery user message, in messages/s, against raw lxml
  parse + serialize of the same envelope bytes (a ceiling no header-level parser can beat).
- ``bench.stream``: a large payload packed and unpacked through ``pack_message`` / ``MessageReader.feed``
  with a hashing sink (no disk), in MB/s and peak RSS, against raw sha256 (and raw gzip) over the same
  chunks. Each measurement runs in its own process so that its peak RSS is its own.

Figures are reported, never asserted: ``python -m bench`` prints a table and writes JSON to bench/results/.
"""
