"""``accesspoint smp serve`` and ``accesspoint discover``: the SMP server and a one-off BDXL + SMP lookup.

``discover`` exits 0 when an endpoint is found, 1 when the participant is not registered (no DNS record, or the
SMP knows no such participant, document type or fitting endpoint), and 2 on any other failure, including an SMP
signature that does not verify or whose signer ``--smp-trust`` does not trust, and an SMP or endpoint the
address policy refuses (an endpoint URL that is not https without ``--allow-http``; a loopback, private or
link-local address outside the ``--allow-network`` ranges). Without ``--smp-trust`` the signature is still
checked, but ``signature_verified`` is false: nobody vouched for the signer.
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import socket
from typing import Any

from cryptography import x509

from accesspoint.cli import EXIT_MALFORMED, EXIT_OK, EXIT_REFUSED, EXIT_USAGE, UsageError, failure
from accesspoint.security.keys import KeyLoadError, certificate_sha256
from accesspoint.security.trust import load_truststore


def register(commands: Any) -> None:
    """Add ``smp serve`` and ``discover``."""
    smp = commands.add_parser("smp", help="the SMP server")
    smp_commands = smp.add_subparsers(dest="smp_command", required=True, parser_class=type(smp))
    serve = smp_commands.add_parser("serve", help="run the SMP server (Peppol, OASIS SMP 1.0 and 2.0)")
    serve.add_argument("--config", required=True, help="TOML file with [smp] and [[smp.listen]]")
    serve.set_defaults(handler=cmd_smp_serve)

    discover = commands.add_parser("discover", help="find a participant's endpoint through BDXL and its SMP")
    discover.add_argument("participant", help="scheme::value, e.g. iso6523-actorid-upis::0007:2120000787")
    discover.add_argument("document_type", help="scheme::value, e.g. busdox-docid-qns::urn:...")
    discover.add_argument("--process", help="scheme::value of the process (default: any)")
    discover.add_argument(
        "--transport-profile",
        action="append",
        help="acceptable transport profile; repeat in order of preference (default: eDelivery AS4 2.0, 1.15, "
        "SDK, Peppol)",
    )
    discover.add_argument("--dns", help="HOST:PORT of the DNS server for the NAPTR/CNAME lookup")
    discover.add_argument("--zone", required=True, help="the SML/BDXL zone, e.g. participant.sml.test.tech.peppol.org")
    discover.add_argument("--scheme", choices=("peppol", "bdxl"), default="peppol", help="how the DNS name is formed")
    discover.add_argument("--smp-trust", help="PEM with the SMP signer or the CA(s) it must chain to")
    discover.add_argument("--allow-http", action="store_true", help="accept an endpoint URL over plain http")
    discover.add_argument(
        "--allow-network",
        action="append",
        default=[],
        metavar="CIDR",
        help="a non-public address range SMPs and endpoints may be at (e.g. 127.0.0.0/8); repeatable",
    )
    discover.set_defaults(handler=cmd_discover)


def _nameserver(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise UsageError(f"--dns must be HOST:PORT, not {text!r}")
    host = host.strip("[]")
    try:
        ipaddress.ip_address(host)
    except ValueError:
        try:
            host = str(socket.getaddrinfo(host, int(port), type=socket.SOCK_DGRAM)[0][4][0])
        except OSError as exc:
            raise UsageError(f"--dns host {host!r} does not resolve: {exc}") from None
    return host, int(port)


def cmd_discover(args: argparse.Namespace) -> tuple[int, dict[str, Any]]:
    """Look the participant up and print the endpoint."""
    from accesspoint.servicekit.httpclient import networks  # here: aiohttp is heavy and most commands do without
    from smp.bdxl import BdxlScheme
    from smp.client import DEFAULT_PROFILES, DiscoveryError, DiscoverySettings, NotRegistered, discover_once

    trust: tuple[x509.Certificate, ...] = ()
    if args.smp_trust:
        try:
            trust = load_truststore(args.smp_trust)
        except (KeyLoadError, OSError, ValueError) as exc:
            raise UsageError(f"cannot read --smp-trust {args.smp_trust}: {exc}") from None
    try:
        allowed = networks(args.allow_network, "--allow-network")
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    settings = DiscoverySettings(
        zone=args.zone,
        scheme=BdxlScheme(args.scheme),
        nameserver=None if args.dns is None else _nameserver(args.dns),
        smp_trust=tuple(trust),
        require_trust=bool(trust),
        allow_http=args.allow_http,
        allowed_networks=allowed,
    )
    profiles = tuple(args.transport_profile) if args.transport_profile else DEFAULT_PROFILES
    asked = {"participant": args.participant, "document_type": args.document_type}
    try:
        endpoint = asyncio.run(
            discover_once(
                settings, args.participant, args.document_type, process=args.process, transport_profile=profiles
            )
        )
    except NotRegistered as exc:
        return EXIT_REFUSED, failure(exc.kind, str(exc), **asked)
    except DiscoveryError as exc:
        return EXIT_MALFORMED, failure(exc.kind, str(exc), **asked)
    return EXIT_OK, {
        "ok": True,
        "participant": str(endpoint.participant),
        "document_type": str(endpoint.document_type),
        "process": None if endpoint.process is None else str(endpoint.process),
        "smp_url": endpoint.smp_url,
        "endpoint_url": endpoint.url,
        "transport_profile": endpoint.transport_profile,
        "certificate_pem": endpoint.certificate_pem,
        "certificate_sha256": endpoint.certificate_sha256,
        "signature_verified": endpoint.signature_verified,
        "smp_signer": endpoint.signer.subject.rfc4514_string(),
        "smp_signer_sha256": certificate_sha256(endpoint.signer),
        "redirected": endpoint.redirected,
        "certpub": [
            {"usage": usage.value, "certificate_sha256": certificate_sha256(certificate)}
            for usage, certificate in endpoint.certpub
        ],
    }


def cmd_smp_serve(args: argparse.Namespace) -> tuple[int, dict[str, Any]]:
    """Run the SMP server until SIGINT or SIGTERM."""
    from accesspoint.servicekit.server import serve
    from accesspoint.servicekit.settings import SettingsError
    from accesspoint.servicekit.tracing import configure_tracing
    from smp.server import load_settings, sites
    from smp.store import SmpStore

    try:
        settings = load_settings(args.config)
    except SettingsError as exc:
        return EXIT_USAGE, failure("config", str(exc), config=args.config, problems=exc.problems)

    settings.observability.configure_logging()
    configure_tracing("smp")

    async def _run() -> None:
        store = await SmpStore.open(settings.database)
        try:
            await serve(sites(settings, store))
        finally:
            await store.close()

    try:
        asyncio.run(_run())
    except OSError as exc:
        return EXIT_MALFORMED, failure("listen", f"cannot listen: {exc}", config=args.config)
    scheme = "http" if settings.tls is None else "https"
    listeners = [
        {"flavour": x.flavour.name.lower(), "url": f"{scheme}://{x.host}:{x.port}{x.prefix or '/'}"}
        for x in settings.listeners
    ]
    return EXIT_OK, {"ok": True, "stopped": True, "listeners": listeners}
