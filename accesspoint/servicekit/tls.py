"""TLS for every service: TLS 1.2 or later, versions and ciphers configurable, contexts checked at start-up.

eDelivery AS4 2.0 (after BSI TR-03116-4) allows TLS 1.2 and 1.3 only, so nothing below 1.2 can be configured.
``ciphers`` is an OpenSSL cipher list for TLS 1.2 (TLS 1.3's suites are OpenSSL's and not configurable here);
unset, Python's defaults apply (forward-secret AEAD suites first).
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path

VERSIONS = {"1.2": ssl.TLSVersion.TLSv1_2, "1.3": ssl.TLSVersion.TLSv1_3}


@dataclass(frozen=True, slots=True)
class TlsSettings:
    """A certificate and key to present; for a server, ``client_ca`` makes client certificates required."""

    certificate: Path
    key: Path
    client_ca: Path | None = None
    minimum_version: ssl.TLSVersion = ssl.TLSVersion.TLSv1_2
    maximum_version: ssl.TLSVersion | None = None
    ciphers: str | None = None


def _versions(
    context: ssl.SSLContext, minimum: ssl.TLSVersion, maximum: ssl.TLSVersion | None, ciphers: str | None
) -> None:
    if minimum < ssl.TLSVersion.TLSv1_2:
        raise ValueError(f"TLS below 1.2 is not allowed, not {minimum.name}")
    context.minimum_version = minimum
    if maximum is not None:
        if maximum < minimum:
            raise ValueError(f"the maximum TLS version {maximum.name} is below the minimum {minimum.name}")
        context.maximum_version = maximum
    if ciphers is not None:
        context.set_ciphers(ciphers)  # ssl.SSLError when OpenSSL knows none of them


def server_context(tls: TlsSettings) -> ssl.SSLContext:
    """A server's context: its certificate; with ``client_ca`` a client certificate from that CA is required."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    _versions(context, tls.minimum_version, tls.maximum_version, tls.ciphers)
    # The password callback keeps OpenSSL from prompting on the terminal for an encrypted key.
    context.load_cert_chain(tls.certificate, tls.key, password=lambda: b"")
    if tls.client_ca is not None:
        context.load_verify_locations(cafile=tls.client_ca)
        context.verify_mode = ssl.CERT_REQUIRED
    return context


def client_context(
    trust: Path | None = None,
    certificate: TlsSettings | None = None,
    *,
    minimum_version: ssl.TLSVersion = ssl.TLSVersion.TLSv1_2,
    maximum_version: ssl.TLSVersion | None = None,
    ciphers: str | None = None,
) -> ssl.SSLContext:
    """A client's context: the CA bundle ``trust`` (else the system's) and the certificate to present, if any."""
    context = ssl.create_default_context(cafile=None if trust is None else str(trust))
    _versions(context, minimum_version, maximum_version, ciphers)
    if certificate is not None:
        context.load_cert_chain(certificate.certificate, certificate.key)
    return context
