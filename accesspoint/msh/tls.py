"""TLS for the AS4 endpoint and the sender: TLS 1.2 or later, optional client certificates, a configured CA."""

from __future__ import annotations

import ssl
from pathlib import Path

from accesspoint.msh.config import TlsConfig
from accesspoint.servicekit.tls import TlsSettings
from accesspoint.servicekit.tls import server_context as service_server_context


def server_context(tls: TlsConfig) -> ssl.SSLContext:
    """The server's context: its certificate, TLS 1.2 or later (``min_version``, ``ciphers`` narrow it); with
    ``client_ca`` a client certificate from that CA is required."""
    settings = TlsSettings(
        tls.certificate, tls.key, tls.client_ca, minimum_version=tls.min_version, ciphers=tls.ciphers
    )
    return service_server_context(settings)


def client_context(trust: Path | None, client: TlsConfig | None) -> ssl.SSLContext:
    """The sender's context: the configured CA bundle (else the system's), its client certificate if any."""
    context = ssl.create_default_context(cafile=None if trust is None else str(trust))
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if client is not None:
        context.load_cert_chain(client.certificate, client.key)
    return context
