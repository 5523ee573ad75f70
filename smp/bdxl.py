"""BDXL: from a participant id to its SMP's base URL through DNS (dnspython).

* U-NAPTR (RFC 4848; eDelivery BDXL 1.6; Peppol SML): flag ``U``, service ``Meta:SMP`` (SMP 1.0, Peppol or OASIS;
  matched case-insensitively) or ``oasis-bdxr-smp-2`` with an optional ``#profile`` suffix (SMP 2.0). The
  regexp ``!ere!replacement!`` is applied to the queried name and must give an http(s) URL.
* Legacy Peppol: a CNAME at ``B-<md5>.<scheme>.<zone>``; the SMP is ``http://<target>/`` at the root.

Every answer carries the TTL to cache it for; NXDOMAIN or no record is ``NotRegistered``, anything else is a
``BdxlError``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum

import dns.asyncresolver
import dns.exception
import dns.name
import dns.rdatatype
import dns.resolver

from smp.identifiers import Identifier, bdxl_naptr_name, peppol_cname_name, peppol_naptr_name


class BdxlScheme(StrEnum):
    """How the DNS name is derived: Peppol (lowercased SHA-256, CNAME fallback) or eDelivery BDXL 1.6."""

    PEPPOL = "peppol"
    BDXL = "bdxl"


class SmpApi(StrEnum):
    """Which REST binding the located SMP speaks."""

    SMP1 = "Meta:SMP"
    SMP2 = "oasis-bdxr-smp-2"


class BdxlError(Exception):
    """DNS failed in a way that says nothing about registration (timeout, SERVFAIL, a malformed record)."""


class NotRegistered(Exception):
    """No DNS record for the participant; ``ttl`` is how long the negative answer may be cached."""

    def __init__(self, message: str, ttl: float) -> None:
        super().__init__(message)
        self.ttl = ttl


@dataclass(frozen=True, slots=True)
class SmpLocation:
    """The SMP's base URL (no trailing slash), its API, the DNS name that gave it, and the answer's TTL."""

    url: str
    api: SmpApi
    dns_name: str
    ttl: float
    via: str  # "naptr" or "cname"


def _service_api(service: str) -> SmpApi | None:
    lowered = service.lower()
    if lowered == "meta:smp":
        return SmpApi.SMP1
    if lowered == "oasis-bdxr-smp-2" or lowered.startswith("oasis-bdxr-smp-2#"):
        return SmpApi.SMP2
    return None


# A regexp from DNS is an attacker's when DNS is: Python's re backtracks without bound, and "!(.*)*1!x!" took
# minutes on a 100-character name, on the event loop. Real records use "^.*$" (U-NAPTR, RFC 4848 2.2, allows
# only that) or a capture or two, so a regexp may hold at most two quantifiers, and none may repeat a group.
_MAX_QUANTIFIERS = 2
_MAX_REPEAT = 255  # a counted repetition beyond a DNS name's length matches nothing more (and re overflows)
_QUANTIFIER_START = frozenset("*+?{")


def _refuse_backtracking(pattern: str) -> None:
    """BdxlError for a regexp whose matching time could explode: a quantified group or too many quantifiers."""
    quantifiers, index, previous = 0, 0, ""
    while index < len(pattern):
        char = pattern[index]
        if char == "\\":
            previous, index = "escape", index + 2
            continue
        if char == "[":  # a class: its characters are literal ("]" first in it is one of them)
            end = index + 1 + (pattern[index + 1 : index + 2] == "^")
            end = pattern.find("]", end + 1)
            previous, index = "class", (len(pattern) if end < 0 else end + 1)
            continue
        if char in _QUANTIFIER_START and previous not in ("", "(", "|", "quantifier"):
            if previous == ")":
                raise BdxlError(f"NAPTR regexp {pattern[:100]!r} repeats a group (unbounded backtracking)")
            quantifiers += 1
            end = pattern.find("}", index) if char == "{" else index
            if char == "{" and end > 0:
                counts = [c for c in pattern[index + 1 : end].split(",") if c.isdigit()]
                if any(int(count) > _MAX_REPEAT for count in counts):
                    raise BdxlError(f"NAPTR regexp {pattern[:100]!r} repeats more than {_MAX_REPEAT} times")
            index = (len(pattern) if end < 0 else end) + 1
            if pattern[index : index + 1] in ("?", "+"):  # lazy or possessive: the same quantifier
                index += 1
            previous = "quantifier"
            continue
        previous, index = char if char in "()|" else "atom", index + 1
    if quantifiers > _MAX_QUANTIFIERS:
        raise BdxlError(f"NAPTR regexp {pattern[:100]!r} has more than {_MAX_QUANTIFIERS} quantifiers")


def apply_naptr_regexp(regexp: str, name: str) -> str:
    """Apply a NAPTR ``<delim>ere<delim>replacement<delim>[i]`` to ``name`` (RFC 3402 section 3.2)."""
    if len(regexp) < 3:
        raise BdxlError(f"NAPTR regexp too short: {regexp!r}")
    delimiter = regexp[0]
    parts = regexp[1:].split(delimiter)
    if len(parts) != 3 or parts[2] not in ("", "i"):
        raise BdxlError(f"malformed NAPTR regexp {regexp[:200]!r}")
    pattern, replacement, flags = parts
    _refuse_backtracking(pattern)
    try:
        compiled = re.compile(pattern, re.IGNORECASE if flags == "i" else 0)
        # RFC 3402 backreferences are \1..\9, which Python's re understands as they are.
        if compiled.search(name) is None:
            raise BdxlError(f"NAPTR regexp {pattern!r} does not match {name!r}")
        # sed-like substitution of the first match, as RFC 3402's DDDS applies it.
        return compiled.sub(replacement, name, count=1)
    except (re.error, OverflowError, RecursionError) as exc:
        raise BdxlError(f"NAPTR regexp {pattern[:100]!r}: {exc}") from None


class BdxlResolver:
    """Finds a participant's SMP in ``zone``; ``nameserver`` (host, port) overrides the system resolver."""

    def __init__(
        self,
        zone: str,
        *,
        scheme: BdxlScheme = BdxlScheme.PEPPOL,
        nameserver: tuple[str, int] | None = None,
        legacy_cname: bool = True,
        legacy_port: int = 80,
        timeout: float = 3.0,
        negative_ttl: float = 30.0,
    ) -> None:
        self.zone = zone
        self.scheme = scheme
        self.legacy_cname = legacy_cname and scheme is BdxlScheme.PEPPOL
        self.legacy_port = legacy_port
        self.negative_ttl = negative_ttl
        if nameserver is None:
            self._resolver = dns.asyncresolver.Resolver()
        else:
            self._resolver = dns.asyncresolver.Resolver(configure=False)
            self._resolver.nameservers = [nameserver[0]]
            self._resolver.port = nameserver[1]
        self._resolver.lifetime = timeout
        # Our own cache (smp.client) honours TTLs and bounds negative answers; dnspython's would double it.
        self._resolver.cache = None

    def naptr_name(self, participant: Identifier) -> str:
        """The name queried for NAPTR records."""
        if self.scheme is BdxlScheme.BDXL:
            return bdxl_naptr_name(participant, self.zone)
        return peppol_naptr_name(participant, self.zone)

    async def locate(self, participant: Identifier, *, api: SmpApi | None = None) -> SmpLocation:
        """The SMP for ``participant`` (NAPTR first; the legacy CNAME if allowed and there is no NAPTR)."""
        name = self.naptr_name(participant)
        try:
            return await self._naptr(name, api)
        except NotRegistered:
            if not self.legacy_cname:
                raise
        return await self._cname(peppol_cname_name(participant, self.zone))

    async def _query(self, name: str, rdtype: dns.rdatatype.RdataType) -> dns.resolver.Answer:
        try:
            return await self._resolver.resolve(name, rdtype, search=False)
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
            raise NotRegistered(f"no {rdtype.name} record at {name}", self.negative_ttl) from None
        except (dns.resolver.NoNameservers, dns.exception.Timeout, dns.resolver.LifetimeTimeout) as exc:
            raise BdxlError(f"DNS lookup of {name} failed: {exc}") from None
        except dns.exception.DNSException as exc:
            raise BdxlError(f"DNS lookup of {name} failed: {exc}") from None

    async def _naptr(self, name: str, api: SmpApi | None) -> SmpLocation:
        answer = await self._query(name, dns.rdatatype.NAPTR)
        ttl = float(answer.rrset.ttl) if answer.rrset is not None else self.negative_ttl
        records = sorted(answer, key=lambda r: (r.order, r.preference))
        for record in records:
            found = _service_api(record.service.decode("ascii", "replace"))
            if record.flags.decode("ascii", "replace").upper() != "U" or found is None:
                continue
            if api is not None and found is not api:
                continue
            url = apply_naptr_regexp(record.regexp.decode("utf-8", "replace"), name)
            if not url.lower().startswith(("http://", "https://")):
                raise BdxlError(f"NAPTR at {name} gives {url[:200]!r}, not an http(s) URL")
            return SmpLocation(url.rstrip("/"), found, name, ttl, "naptr")
        raise NotRegistered(f"no U-NAPTR record for an SMP at {name}", min(ttl, self.negative_ttl))

    async def _cname(self, name: str) -> SmpLocation:
        answer = await self._query(name, dns.rdatatype.CNAME)
        if answer.rrset is None or len(answer.rrset) == 0:
            raise NotRegistered(f"no CNAME at {name}", self.negative_ttl)
        target = next(iter(answer.rrset)).target.to_text(omit_final_dot=True)
        port = "" if self.legacy_port == 80 else f":{self.legacy_port}"
        return SmpLocation(f"http://{target}{port}", SmpApi.SMP1, name, float(answer.rrset.ttl), "cname")
