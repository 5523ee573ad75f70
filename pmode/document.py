"""P-Mode documents as text (YAML and TOML writers) and a loaded set as JSON for ``pmode show``."""

from __future__ import annotations

import json
import re
from datetime import timedelta
from typing import Any

import yaml
from cryptography import x509
from cryptography.x509.oid import NameOID

from accesspoint.security.keys import certificate_sha256
from accesspoint.security.policy import SecurityPolicy
from pmode.matching import PModeSet
from pmode.model import Leg, PartyDefinition, PMode, PModeParty
from pmode.values import format_duration, short_name

_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")


class _PlainDumper(yaml.SafeDumper):
    """A safe dumper that writes shared values out again instead of as anchors and aliases (&id001)."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def dump_yaml(document: dict[str, Any]) -> str:
    """The document as YAML, keys in the order given."""
    return yaml.dump(document, Dumper=_PlainDumper, sort_keys=False, allow_unicode=True, width=120)


def _toml_string(text: str) -> str:
    # A JSON string is a TOML basic string (same escapes, \uXXXX included), except that TOML also wants DEL escaped.
    return json.dumps(text, ensure_ascii=False).replace("\x7f", "\\u007f")


def _key(key: str) -> str:
    # fullmatch: "$" would also match before a trailing newline, leaving "0\n" bare.
    return key if _BARE_KEY.fullmatch(key) else _toml_string(key)


def _is_table(value: object) -> bool:
    return isinstance(value, dict)


def _is_table_list(value: object) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(item, dict) for item in value)


def _toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return _toml_string(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(item) for item in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{_key(k)} = {_toml_value(v)}" for k, v in value.items() if v is not None) + "}"
    raise TypeError(f"no TOML form for {type(value).__name__}")


def _toml_table(lines: list[str], path: list[str], table: dict[str, Any]) -> None:
    # TOML wants a table's own keys before any sub-table header.
    for key, value in table.items():
        if value is not None and not _is_table(value) and not _is_table_list(value):
            lines.append(f"{_key(key)} = {_toml_value(value)}")
    for key, value in table.items():
        if _is_table(value):
            lines.extend(["", f"[{'.'.join(_key(k) for k in [*path, key])}]"])
            _toml_table(lines, [*path, key], value)
        elif _is_table_list(value):
            for item in value:
                lines.extend(["", f"[[{'.'.join(_key(k) for k in [*path, key])}]]"])
                _toml_table(lines, [*path, key], item)


def dump_toml(document: dict[str, Any]) -> str:
    """The document as TOML (tables and arrays of tables; None values are left out)."""
    lines: list[str] = []
    _toml_table(lines, [], document)
    return "\n".join(lines).lstrip("\n") + "\n"


# ------------------------------------------------------------------------------------------------------- show


def _duration(value: timedelta | None) -> str:
    return "forever" if value is None else format_duration(value)


def _certificate(certificate: x509.Certificate | None) -> dict[str, Any] | None:
    if certificate is None:
        return None
    names = certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return {
        "subject": certificate.subject.rfc4514_string(),
        "common_name": str(names[0].value) if names else None,
        "sha256": certificate_sha256(certificate),
        "not_after": certificate.not_valid_after_utc.isoformat(),
    }


def describe_party(party: PartyDefinition) -> dict[str, Any]:
    """A party as JSON."""
    return {
        "name": party.name,
        "party_ids": [{"value": p.value, "type": p.type} for p in party.party_ids],
        "role": party.role,
        "endpoint": "dynamic" if party.dynamic else party.endpoint,
        "signing_certificate": _certificate(party.signing_certificate),
        "encryption_certificate": _certificate(party.encryption_certificate),
    }


def describe_security(policy: SecurityPolicy) -> dict[str, Any]:
    """A leg's security policy as JSON, algorithms by their short names."""
    return {
        "profile": policy.profile.value,
        "sign": policy.sign,
        "encrypt": policy.encrypt,
        "signature_algorithm": short_name(policy.signature_algorithm),
        "digest_algorithm": short_name(policy.digest_algorithm),
        "data_encryption": short_name(policy.data_encryption),
        "key_transport": short_name(policy.key_transport),
        "key_agreement": short_name(policy.key_agreement),
        "key_agreement_curve": None if policy.key_agreement_curve is None else short_name(policy.key_agreement_curve),
        "key_wrap": short_name(policy.key_wrap),
        "token_reference": policy.token_reference.value,
        "legacy_algorithms": sorted(policy.legacy_algorithms),
        "require_signed_receipts": policy.require_signed_receipts,
        "trust": {
            "anchors": [_certificate(c) for c in policy.trust.anchors],
            "intermediates": [_certificate(c) for c in policy.trust.intermediates],
            "pinned": [_certificate(c) for c in policy.trust.pinned],
            "revocation": policy.trust.revocation.value,
            "bind_cn_to_party_id": policy.trust.bind_cn_to_party_id,
            "required_policies": list(policy.trust.required_policies),
        },
    }


def _side(side: PModeParty) -> dict[str, Any]:
    return {"party": side.party.name, "role": side.role}


def describe_leg(leg: Leg) -> dict[str, Any]:
    """A leg as JSON."""
    awareness = leg.reception_awareness
    return {
        "leg": leg.index + 1,
        "sender": leg.sender.value,
        "direction": leg.direction.value,
        "service": {"value": leg.service.value, "type": leg.service.type},
        "action": leg.action,
        "mpc": leg.mpc,
        "properties": list(leg.required_properties),
        "compression": leg.compression,
        "payload": {
            "max_size": leg.payload.max_size,
            "max_parts": leg.payload.max_parts,
            "decompression_limit": leg.payload.decompression_limit,
            "decompression_ratio": leg.payload.decompression_ratio,
            "decompression_floor": leg.payload.decompression_floor,
            "format": leg.payload.format.value,
        },
        "reception_awareness": {
            "enabled": awareness.enabled,
            "retries": awareness.retries,
            "backoff_base": _duration(awareness.backoff_base),
            "backoff_max": _duration(awareness.backoff_max),
            "jitter": awareness.jitter,
            "duplicate_detection": awareness.duplicate_detection,
            "duplicate_window": _duration(awareness.duplicate_window),
            "missing_receipt": awareness.missing_receipt,
        },
        "error_handling": {
            "notify_consumer": leg.error_handling.notify_consumer,
            "sender_errors_to": leg.error_handling.sender_errors_to,
        },
        "security": describe_security(leg.security),
    }


def describe_pmode(pmode: PMode) -> dict[str, Any]:
    """A P-Mode as JSON, every default filled in."""
    agreement = pmode.agreement
    return {
        "id": pmode.id,
        "network": pmode.network,
        "transport_profile": pmode.transport_profile,
        "agreement": None if agreement is None else {"value": agreement.value, "type": agreement.type},
        "shared_id": pmode.shared_id,
        "leniency": sorted(rule.value for rule in pmode.leniency),
        "mep": pmode.mep.value,
        "mep_uri": pmode.mep.uri.value,
        "binding": pmode.binding.value,
        "binding_uri": pmode.binding.uri.value,
        "initiator": _side(pmode.initiator),
        "responder": _side(pmode.responder),
        "local": pmode.local.value,
        "legs": [describe_leg(leg) for leg in pmode.legs],
        "retention": {
            "messages": _duration(pmode.retention.messages),
            "payloads": _duration(pmode.retention.payloads),
            "evidence": _duration(pmode.retention.evidence),
        },
    }


def describe(pmodes: PModeSet, pmode_id: str | None = None) -> dict[str, Any]:
    """The whole set (or one P-Mode and its parties) as JSON."""
    chosen = [p for p in pmodes if pmode_id is None or p.id == pmode_id]
    names = {side.party.name for p in chosen for side in (p.initiator, p.responder)}
    return {
        "self": list(pmodes.local_parties),
        "parties": [describe_party(p) for p in pmodes.parties if pmode_id is None or p.name in names],
        "pmodes": [describe_pmode(p) for p in chosen],
    }
