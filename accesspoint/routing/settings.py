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

Each function raises ``ValueError`` naming the field; the server's loader turns it into its ConfigError.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from accesspoint.httpclient import networks
from accesspoint.security.keys import KeyLoadError
from accesspoint.security.trust import load_truststore
from smp.bdxl import BdxlScheme
from smp.client import DiscoverySettings


@dataclass(frozen=True, slots=True)
class RoutingSettings:
    """Where FaR is (a URL, or settings to run it in this process) and which messages are routed."""

    far_url: str | None = None
    far_settings: Any = None  # far.settings.FarSettings when FaR runs in-process
    token: str | None = None
    timeout: timedelta = timedelta(seconds=5)
    pmodes: tuple[str, ...] = ()  # empty: every incoming P-Mode
    forward_pmode: str | None = None


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
    if not isinstance(value, dict):
        raise ValueError(f"{where}: expected {{zone, dns, scheme, smp_trust, allow_http, allow_networks, networks}}")
    networks = value.get("networks") or {}
    if not isinstance(networks, dict) or not all(isinstance(v, dict) for v in networks.values()):
        raise ValueError(f"{where}.networks: a mapping of P-Mode network to {{zone, dns, scheme, smp_trust}}")
    common = {k: v for k, v in value.items() if k != "networks"}
    default = _discovery(base, common, where)
    if not networks:
        return default
    overrides = tuple(
        (str(name), _discovery(base, {**common, **entry}, f"{where}.networks.{name}"))
        for name, entry in networks.items()
    )
    return NetworkDiscovery(
        zone=default.zone,
        scheme=default.scheme,
        nameserver=default.nameserver,
        smp_trust=default.smp_trust,
        allow_http=default.allow_http,
        allowed_networks=default.allowed_networks,
        networks=overrides,
    )


def _discovery(base: Path, value: dict[str, Any], where: str) -> DiscoverySettings:
    unknown = sorted(set(value) - {"zone", "dns", "scheme", "smp_trust", "allow_http", "allow_networks"})
    if unknown:
        known = "allow_http, allow_networks, dns, networks, scheme, smp_trust, zone"
        raise ValueError(f"{where}.{unknown[0]}: unknown setting (known: {known})")
    zone = value.get("zone")
    if not isinstance(zone, str) or not zone.strip("."):
        raise ValueError(f"{where}.zone: required, a DNS zone")
    try:
        scheme = BdxlScheme(str(value.get("scheme", "peppol")))
    except ValueError:
        raise ValueError(f"{where}.scheme: peppol or bdxl, not {value.get('scheme')!r}") from None
    trust_files = value.get("smp_trust")
    if trust_files is None:
        raise ValueError(f"{where}.smp_trust: required (the SMP signers' truststore)")
    files = trust_files if isinstance(trust_files, list) else [trust_files]
    try:
        trust = load_truststore([base / str(f) for f in files])
    except (KeyLoadError, OSError) as exc:
        raise ValueError(f"{where}.smp_trust: {exc}") from None
    if not trust:
        raise ValueError(f"{where}.smp_trust: no certificate in {files}")
    dns = value.get("dns")
    allow_http = value.get("allow_http", False)
    if not isinstance(allow_http, bool):
        raise ValueError(f"{where}.allow_http: true or false, not {allow_http!r}")
    ranges = value.get("allow_networks", [])
    if not isinstance(ranges, list):
        raise ValueError(f"{where}.allow_networks: a list of address ranges like 127.0.0.0/8")
    return DiscoverySettings(
        zone=zone.strip("."),
        scheme=scheme,
        nameserver=None if dns is None else _nameserver(str(dns), f"{where}.dns"),
        smp_trust=trust,
        allow_http=allow_http,
        allowed_networks=networks(ranges, f"{where}.allow_networks"),
    )


def _nameserver(text: str, where: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{where}: HOST:PORT, not {text!r}")
    host = host.strip("[]")
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(f"{where}: the host must be an IP address, not {host!r}") from None
    return host, int(port)


def parse_routing(base: Path, value: object, where: str) -> RoutingSettings | None:
    """``routing:`` → RoutingSettings (None when absent)."""
    if value is None:
        return None
    if not isinstance(value, dict):
        raise ValueError(f"{where}: expected {{far, token, timeout, pmodes, forward_pmode}}")
    unknown = sorted(set(value) - {"far", "token", "timeout", "pmodes", "forward_pmode"})
    if unknown:
        raise ValueError(f"{where}.{unknown[0]}: unknown setting (known: far, forward_pmode, pmodes, timeout, token)")
    far = value.get("far")
    far_url = far_settings = None
    if isinstance(far, str) and far.startswith(("http://", "https://")):
        far_url = far.rstrip("/")
    elif isinstance(far, dict):
        from far.settings import SettingsError, parse_settings

        try:
            far_settings = parse_settings(far, where=f"{where}.far", base=base)
        except SettingsError as exc:
            raise ValueError(str(exc)) from None
    else:
        raise ValueError(f"{where}.far: required, FaR's http(s) URL or a mapping of FaR settings")
    token = value.get("token")
    if token is not None and (not isinstance(token, str) or len(token) < 16):
        raise ValueError(f"{where}.token: a secret of at least 16 characters")
    pmodes = value.get("pmodes", [])
    if not isinstance(pmodes, list) or not all(isinstance(p, str) for p in pmodes):
        raise ValueError(f"{where}.pmodes: a list of P-Mode ids")
    forward = value.get("forward_pmode")
    if forward is not None and not isinstance(forward, str):
        raise ValueError(f"{where}.forward_pmode: a P-Mode id")
    return RoutingSettings(
        far_url=far_url,
        far_settings=far_settings,
        token=token,
        timeout=_seconds(value.get("timeout", "5s"), f"{where}.timeout"),
        pmodes=tuple(pmodes),
        forward_pmode=forward,
    )


def _seconds(value: object, where: str) -> timedelta:
    text = str(value).strip()
    try:
        if text.endswith("ms"):
            return timedelta(milliseconds=float(text[:-2]))
        if text.endswith("s"):
            return timedelta(seconds=float(text[:-1]))
        return timedelta(seconds=float(text))
    except ValueError:
        raise ValueError(f"{where}: a duration like 5s or 500ms, not {value!r}") from None
