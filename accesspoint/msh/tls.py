"""TLS for the AS4 endpoint and the sender: TLS 1.2 or later, optional client certificates, a configured CA."""

from __future__ import annotations

import ssl
from pathlib import Path

from accesspoint.msh.config import TlsConfig


def server_context(tls: TlsConfig) -> ssl.SSLContext:
    """The server's context: its certificate; with ``client_ca`` a client certificate from that CA is required."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    # eDelivery AS4 2.0 (and BSI TR-03116-4 it follows) allow TLS 1.2 and 1.3 only; settings may narrow further.
    context.minimum_version = max(ssl.TLSVersion.TLSv1_2, tls.min_version)
    if tls.ciphers is not None:
        context.set_ciphers(tls.ciphers)
    context.load_cert_chain(tls.certificate, tls.key)
    if tls.client_ca is not None:
        context.load_verify_locations(cafile=tls.client_ca)
        context.verify_mode = ssl.CERT_REQUIRED
    return context


def client_context(trust: Path | None, client: TlsConfig | None) -> ssl.SSLContext:
    """The sender's context: the configured CA bundle (else the system's), its client certificate if any."""
    context = ssl.create_default_context(cafile=None if trust is None else str(trust))
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if client is not None:
        context.load_cert_chain(client.certificate, client.key)
    return context
