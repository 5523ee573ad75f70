"""The server settings' ``discovery`` and ``routing`` sections, typed and checked on load.

::

    discovery:                      # partners named `endpoint: dynamic` in the P-Modes are found here
      zone: participant.sml.example # the BDXL / SML zone
      dns: 127.0.0.1:5353           # optional: the resolver for the NAPTR lookup (else the system's)
      scheme: peppol                # peppol (SHA-256/base32 label) or bdxl (eDelivery BDXL 1.6)
      smp_trust: smp-ca.pem         # the SMP signers' truststore (PEM, DER or PKCS#12); required
      allow_http: false             # endpoint URLs from an SMP must be https unless this is true (test networks)
      allow_networks: []            # non-public ranges SMPs and endpoints may be at (e.g. [127.0.0.0/8] on loopback)
      networks:                     # optional, per P-Mode network; what an entry leaves out it inherits
        sdk: {zone: sml.sdk.example, smp_trust: sdk-smp-ca.pem}
    routing:                        # route incoming digital post through FaR to the mailbox operators
      far: http://far:8470          # FaR's REST API, or a mapping of FaR settings ([far] keys) to run it in-process
      token: a-read-token-of-16+    # FaR bearer token (read scope)
      timeout: 5s
      pmodes: [nordic-to-se]        # incoming P-Modes whose messages are routed (default: every incoming one)
      forward_pmode: se-to-operator # optional: the P-Mode to forward on (default: the one naming the operator)
      sender_binding: true          # digital post only from registered senders through their access points
      sender_cache: 10s             # how long a sender's record from FaR is used before it is asked again

Each function raises SettingsError (a ValueError) naming every mistake with its field; the server's loader turns
it into its ConfigError. Durations follow :mod:`accesspoint.servicekit.units` (``5s``, ``500ms``, ``1m``, ``PT5S``).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from accesspoint.security.keys import KeyLoadError
from accesspoint.security.trust import load_truststore
from accesspoint.servicekit.httpclient import IpNetwork
from accesspoint.servicekit.settings import Section, SettingsReader
from smp.bdxl import BdxlScheme
from smp.client import DiscoverySettings

DISCOVERY_KEYS = frozenset({"zone", "dns", "scheme", "smp_trust", "allow_http", "allow_networks"})
ROUTING_KEYS = frozenset({"far", "token", "timeout", "pmodes", "forward_pmode", "sender_binding", "sender_cache"})
_SCHEMES = {scheme.value: scheme for scheme in BdxlScheme}


@dataclass(frozen=True, slots=True)
class RoutingSettings:
    """Where FaR is (a URL, or settings to run it in this process) and which messages are routed."""

    far_url: str | None = None
    far_settings: Any = None  # far.settings.FarSettings when FaR runs in-process
    token: str | None = None
    timeout: timedelta = timedelta(seconds=5)
    pmodes: tuple[str, ...] = ()  # empty: every incoming P-Mode
    forward_pmode: str | None = None
    # Off only where FaR keeps no sender register yet: then any originalSender FaR accepts is routed.
    sender_binding: bool = True
    sender_cache: timedelta = timedelta(seconds=10)


@dataclass(frozen=True, slots=True)
class NetworkDiscovery(DiscoverySettings):
    """Discovery settings with overrides per P-Mode network (SDK's SML beside Peppol's, say)."""

    networks: tuple[tuple[str, DiscoverySettings], ...] = ()

    def for_network(self, network: str) -> DiscoverySettings:
        """The settings for a P-Mode's network: its override, else these."""
        return dict(self.networks).get(network, self)


def parse_discovery(base: Path, value: object, where: str) -> DiscoverySettings | None:
    """``discovery:`` → DiscoverySettings (None when absent); with ``networks:`` a NetworkDiscovery.

    Each entry of ``networks`` (keyed by P-Mode network: sdk, peppol, edelivery-1.15, ...) takes the same keys;
    what it leaves out it inherits.
    """
    if value is None:
        return None
    reader = SettingsReader(base)
    section = reader.section(value, where, known=DISCOVERY_KEYS | {"networks"})
    default = _discovery(section, None)
    networks = section.section("networks")
    overrides = tuple(
        (str(name), _discovery(networks.section(str(name), known=DISCOVERY_KEYS, required=True), default))
        for name in networks.values
    )
    reader.done()
    if not overrides:
        return default
    return NetworkDiscovery(
        zone=default.zone,
        scheme=default.scheme,
        nameserver=default.nameserver,
        smp_trust=default.smp_trust,
        allow_http=default.allow_http,
        allowed_networks=default.allowed_networks,
        networks=overrides,
    )


def _discovery(section: Section, inherited: DiscoverySettings | None) -> DiscoverySettings:
    """One discovery table; what it leaves out comes from ``inherited`` (required when there is none)."""
    zone = section.string("zone", required=inherited is None).strip(".")
    if section.has("zone") and not zone:
        section.mistake("zone", "required, a DNS zone")
    trust = _truststore(section) if section.has("smp_trust") or inherited is None else inherited.smp_trust
    return DiscoverySettings(
        zone=zone or (inherited.zone if inherited else ""),
        scheme=section.choice("scheme", inherited.scheme if inherited else BdxlScheme.PEPPOL, _SCHEMES),
        nameserver=_nameserver(section) if section.has("dns") else (inherited.nameserver if inherited else None),
        smp_trust=trust,
        allow_http=section.boolean("allow_http", inherited.allow_http if inherited else False),
        allowed_networks=_allowed_networks(section, inherited),
    )


def _allowed_networks(section: Section, inherited: DiscoverySettings | None) -> tuple[IpNetwork, ...]:
    """``allow_networks``: the non-public address ranges SMPs and endpoints may be at (none by default)."""
    fallback = inherited.allowed_networks if inherited else ()
    ranges = section.get("allow_networks", fallback)
    if not isinstance(ranges, list | tuple):
        section.mistake("allow_networks", "must be a list of address ranges like 127.0.0.0/8")
        return fallback
    found = []
    for item in ranges:
        try:
            found.append(ipaddress.ip_network(str(item), strict=False))
        except ValueError:
            section.mistake("allow_networks", f"{item!r} is not an address range like 127.0.0.0/8 or ::1")
            return fallback
    return tuple(found)


def _truststore(section: Section) -> tuple[Any, ...]:
    files = section.get("smp_trust")
    if files is None:
        section.mistake("smp_trust", "required (the SMP signers' truststore)")
        return ()
    names = files if isinstance(files, list) else [files]
    try:
        trust = load_truststore([section.reader.base / str(name) for name in names])
    except (KeyLoadError, OSError) as exc:
        section.mistake("smp_trust", str(exc))
        return ()
    if not trust:
        section.mistake("smp_trust", f"no certificate in {names}")
    return tuple(trust)


def _nameserver(section: Section) -> tuple[str, int] | None:
    text = str(section.get("dns"))
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        section.mistake("dns", f"HOST:PORT, not {text!r}")
        return None
    host = host.strip("[]")
    try:
        ipaddress.ip_address(host)
    except ValueError:
        section.mistake("dns", f"the host must be an IP address, not {host!r}")
        return None
    return host, int(port)


def parse_routing(base: Path, value: object, where: str) -> RoutingSettings | None:
    """``routing:`` → RoutingSettings (None when absent)."""
    if value is None:
        return None
    reader = SettingsReader(base)
    section = reader.section(value, where, known=ROUTING_KEYS)
    far = section.get("far")
    far_url = far_settings = None
    if isinstance(far, str) and far.startswith(("http://", "https://")):
        far_url = far.rstrip("/")
    elif isinstance(far, dict):
        from far.settings import KNOWN, read_settings

        far_settings = read_settings(section.section("far", known=KNOWN))
    else:
        section.mistake("far", "required, FaR's http(s) URL or a mapping of FaR settings")
    settings = RoutingSettings(
        far_url=far_url,
        far_settings=far_settings,
        token=section.secret("token"),
        timeout=section.duration("timeout", "5s", positive=True),
        pmodes=section.strings("pmodes", what="P-Mode ids"),
        forward_pmode=section.optional_string("forward_pmode"),
        sender_binding=section.boolean("sender_binding", True),
        sender_cache=section.duration("sender_cache", "10s", positive=True),
    )
    reader.done()
    return settings
