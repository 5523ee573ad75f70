"""Load a P-Mode file (YAML or TOML) into a validated PModeSet, reporting every problem at once."""

from __future__ import annotations

import hashlib
import re
import tomllib
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import yaml
from cryptography import x509

from accesspoint.core.conformance import RELAXABLE, WireRule
from accesspoint.core.model import PartyId, Service
from accesspoint.security.algorithms import (
    SHA1_BASED,
    DataEncryption,
    DigestAlgorithm,
    KeyAgreement,
    KeyTransport,
    KeyWrap,
    MaskGeneration,
    NamedCurve,
    SignatureAlgorithm,
)
from accesspoint.security.keys import KeyLoadError, load_certificates
from accesspoint.security.policy import Profile, RevocationMode, SecurityPolicy, TokenReference, TrustSettings
from pmode.errors import PModeError, Problem
from pmode.matching import PModeSet
from pmode.model import (
    INITIATOR_ROLE,
    RESPONDER_ROLE,
    Agreement,
    Binding,
    Direction,
    ErrorHandling,
    Leg,
    Mep,
    PartyDefinition,
    PayloadFormat,
    PayloadLimits,
    PMode,
    PModeParty,
    ReceptionAwareness,
    Retention,
    Side,
)
from pmode.profiles import NetworkProfile, all_profiles
from pmode.values import Context, Fields, parse_enum, short_name

FORMAT_VERSION = 1
DYNAMIC = "dynamic"
_PROFILE_NAMES = {Profile.EDELIVERY_1_15: "edelivery-1.15", Profile.EDELIVERY_2_0: "edelivery-2.0"}
_LEGACY_ENUMS = (SignatureAlgorithm, DigestAlgorithm, KeyTransport, MaskGeneration)
# Settings that only one security profile uses: naming them under the other is a mistake worth reporting.
_ONLY_IN = {
    Profile.EDELIVERY_1_15: ("key_transport",),
    Profile.EDELIVERY_2_0: ("key_agreement", "key_agreement_curve", "key_wrap"),
}


def read_document(path: Path) -> object:
    """The parsed YAML or TOML document (by suffix); PModeError names the file on any failure."""
    name = str(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise PModeError([Problem(name, None, "(file)", f"cannot read: {exc.strerror}")]) from None
    try:
        if path.suffix.lower() == ".toml":
            return tomllib.loads(data.decode("utf-8"))
        if path.suffix.lower() in (".yaml", ".yml"):
            return yaml.safe_load(data)
    except (tomllib.TOMLDecodeError, yaml.YAMLError, UnicodeDecodeError) as exc:
        raise PModeError([Problem(name, None, "(file)", f"not valid {path.suffix[1:].upper()}: {exc}")]) from None
    raise PModeError([Problem(name, None, "(file)", "the file name must end in .yaml, .yml or .toml")])


def load_pmodes(path: str | Path) -> PModeSet:
    """Load and validate a P-Mode file; paths inside it are relative to its folder. Raises PModeError."""
    path = Path(path)
    document = read_document(path)
    return load_document(document, file=str(path), base=path.resolve().parent, source=path)


def load_document(
    document: object,
    *,
    file: str,
    base: Path,
    source: Path | None = None,
    require_certificates: bool = True,
) -> PModeSet:
    """Build a PModeSet from a parsed document; ``require_certificates=False`` lets an import be checked."""
    ctx = _Loader(file=file, base=base, require_certificates=require_certificates)
    top = Fields(ctx, document, "")
    version = top.integer("version", FORMAT_VERSION, minimum=1)
    if version != FORMAT_VERSION:
        ctx.error("version", f"this access point reads version {FORMAT_VERSION}, found {version}")
    local = top.strings("self")
    if not local and not top.has("self"):
        ctx.error("self", "is required: the name of the party (or parties) this access point is")
    parties = _parties(ctx, top.table("parties"))
    for name in local:
        if name not in parties:
            ctx.error("self", f"names the party {name!r}, which is not defined under parties")
    pmodes: list[PMode] = []
    seen: set[str] = set()
    for path, item in top.items("pmodes"):
        pmode = _pmode(ctx, item, path, parties, set(local))
        if pmode is None:
            continue
        if pmode.id in seen:
            ctx.pmode = None
            ctx.error(f"{path}.id", f"the P-Mode id {pmode.id!r} is used twice")
        seen.add(pmode.id)
        pmodes.append(pmode)
    if not top.has("pmodes"):
        ctx.error("pmodes", "is required: at least one P-Mode")
    _check_endpoints(ctx, pmodes)
    top.finish()
    if ctx.problems:
        raise PModeError(ctx.problems)
    return PModeSet(
        pmodes=tuple(pmodes),
        parties=tuple(parties.values()),
        local_parties=local,
        source=source,
        snapshot=snapshot(source, ctx.files) if source is not None else (),
    )


def snapshot(source: Path, files: list[Path] | tuple[str, ...]) -> tuple[tuple[str, str], ...]:
    """(path, sha256) of the P-Mode file and the files it names; an unreadable file hashes as ``missing``."""
    entries: list[tuple[str, str]] = []
    for path in [source, *(Path(f) for f in files)]:
        try:
            digest = hashlib.sha256(path.read_bytes()).hexdigest()
        except OSError:
            digest = "missing"
        entries.append((str(path), digest))
    return tuple(entries)


@dataclass(frozen=True, slots=True)
class Reload:
    """The outcome of ``load_if_changed``: the set to use now, whether it is new, and why a new file was refused."""

    pmodes: PModeSet
    changed: bool
    error: PModeError | None = None


def load_if_changed(path: str | Path, previous: PModeSet | None) -> Reload:
    """Reload when the file or a file it names changed; a bad file keeps the previous set and says why."""
    # With no previous set a bad file raises PModeError: an access point must not start without agreements.
    path = Path(path)
    if previous is not None and previous.source == path and previous.snapshot:
        files = tuple(entry[0] for entry in previous.snapshot[1:])
        if snapshot(path, files) == previous.snapshot:
            return Reload(previous, changed=False)
    try:
        return Reload(load_pmodes(path), changed=True)
    except PModeError as exc:
        if previous is None:
            raise
        return Reload(previous, changed=False, error=exc)


class _Loader(Context):
    """The read context plus what loading needs: whether certificates are required, which files were read."""

    def __init__(self, *, file: str, base: Path, require_certificates: bool) -> None:
        super().__init__(file=file, base=base)
        self.require_certificates = require_certificates
        self.files: list[Path] = []
        # Parties whose certificate file failed: what depends on it is not reported again.
        self.broken: set[str] = set()

    def certificates(self, fields: Fields, key: str) -> tuple[x509.Certificate, ...]:
        """Every certificate in the files a key names (one path or a list)."""
        found: list[x509.Certificate] = []
        for path, item in fields.items(key):
            if not isinstance(item, str) or not item.strip():
                self.error(path, "expected a file path")
                continue
            file = self.resolve(item.strip())
            self.files.append(file)
            try:
                certificates = load_certificates(file)
            except KeyLoadError as exc:
                self.error(path, f"cannot load {item!r}: {str(exc).removeprefix(f'{file}: ')}")
                continue
            if not certificates:
                self.error(path, f"{item!r} holds no certificate")
            found.extend(certificates)
        return tuple(found)

    def certificate(self, fields: Fields, key: str) -> x509.Certificate | None:
        """The first certificate of one file (the leaf, when the file holds a chain)."""
        if isinstance(fields.raw(key), list):
            self.error(fields.at(key), "expected one file path")
            return None
        found = self.certificates(fields, key)
        return found[0] if found else None


# ---------------------------------------------------------------------------------------------------- parties


def _party_ids(ctx: _Loader, fields: Fields) -> tuple[PartyId, ...]:
    found: list[PartyId] = []
    for path, item in fields.items("party_ids"):
        if isinstance(item, str) and item.strip():
            found.append(PartyId(item.strip()))
            continue
        entry = Fields(ctx, item, path)
        value = entry.text("value", required=True)
        kind = entry.text("type")
        entry.finish()
        if value is not None:
            found.append(PartyId(value, kind))
    return tuple(found)


def _http_url(text: str) -> bool:
    try:
        url = urlparse(text)
    except ValueError:  # "http://[abc": an IPv6 host that does not close
        return False
    return url.scheme in ("http", "https") and bool(url.netloc)


def _parties(ctx: _Loader, table: Fields) -> dict[str, PartyDefinition]:
    parties: dict[str, PartyDefinition] = {}
    for name, value in table.data.items():
        table.raw(name)
        fields = Fields(ctx, value, table.at(str(name)))
        party_ids = _party_ids(ctx, fields)
        # Optional: a party that only sends to us (and never pulls from us) needs none; _check_endpoints asks for
        # it where a P-Mode has us POST to the party.
        endpoint = fields.text("endpoint")
        dynamic = endpoint == DYNAMIC
        if endpoint is not None and not dynamic and not _http_url(endpoint):
            ctx.error(fields.at("endpoint"), f"expected an http(s) URL or 'dynamic', found {endpoint!r}")
        if not party_ids and not dynamic:
            ctx.error(fields.at("party_ids"), "is required (only a dynamic party may leave its PartyIds to discovery)")
        before = len(ctx.problems)
        signing = ctx.certificate(fields, "signing_certificate")
        encryption = ctx.certificate(fields, "encryption_certificate")
        if len(ctx.problems) > before:
            ctx.broken.add(str(name))
        parties[str(name)] = PartyDefinition(
            name=str(name),
            party_ids=party_ids,
            role=fields.text("role"),
            signing_certificate=signing,
            encryption_certificate=encryption,
            endpoint=None if dynamic else endpoint,
            dynamic=dynamic,
        )
        fields.finish()
    if not parties:
        ctx.error("parties", "is required: at least this access point's own party")
    return parties


def _check_endpoints(ctx: _Loader, pmodes: list[PMode]) -> None:
    """Where a leg has us POST to the partner (we push its message, or pull it), the partner needs an endpoint."""
    for pmode in pmodes:
        party = pmode.partner.party
        if party.endpoint is not None or party.dynamic:
            continue
        for leg in pmode.legs:
            if (leg.direction is Direction.OUTGOING) != (pmode.binding is Binding.PULL):
                ctx.pmode = pmode.id
                what = "pull from" if pmode.binding is Binding.PULL else "send to"
                ctx.error(f"legs[{leg.index}]", f"we {what} party {party.name!r}, which has no endpoint")
                ctx.pmode = None
                break


# ----------------------------------------------------------------------------------------------------- P-Modes


def _side(ctx: _Loader, fields: Fields, key: str, parties: dict[str, PartyDefinition]) -> PModeParty | None:
    side = fields.table(key)
    name = side.text("party", required=True)
    role = side.text("role")
    side.finish()
    party = parties.get(name) if name is not None else None
    if name is not None and party is None:
        ctx.error(side.at("party"), f"names the party {name!r}, which is not defined under parties")
    if party is None:
        return None
    default_role = INITIATOR_ROLE if key == "initiator" else RESPONDER_ROLE
    return PModeParty(party, role or party.role or default_role)


def _pmode(ctx: _Loader, item: object, path: str, parties: dict[str, PartyDefinition], local: set[str]) -> PMode | None:
    ctx.pmode = None
    fields = Fields(ctx, item, path)
    pmode_id = fields.text("id", required=True)
    if pmode_id is None:
        return None  # without an id (or a network, below) the rest cannot be read meaningfully
    ctx.pmode = pmode_id
    # Inside a P-Mode, fields are named relative to it: the message already says which P-Mode.
    fields.path = ""
    profiles = all_profiles()
    network_name = fields.text("network", required=True)
    profile = profiles.get(network_name or "")
    if network_name is not None and profile is None:
        ctx.error("network", f"{network_name!r} is not one of: {', '.join(profiles)}")
    if profile is None:
        return None
    transport_profile = fields.text("transport_profile", profile.transport_profile) or profile.transport_profile
    agreement = _agreement(ctx, fields) if fields.has("agreement") else profile.agreement
    mep = fields.choice("mep", Mep, profile.mep) or profile.mep
    binding = fields.choice("binding", Binding, profile.binding) or profile.binding
    if (mep is Mep.TWO_WAY) != (binding is Binding.PUSH_AND_PUSH):
        ctx.error("binding", f"{binding.value!r} does not go with MEP {mep.value!r}")
    initiator = _side(ctx, fields, "initiator", parties)
    responder = _side(ctx, fields, "responder", parties)
    retention = _retention(ctx, fields.table("retention"), profile)
    shared_id = fields.flag("shared_id", False)
    if shared_id and agreement is None:
        ctx.error("shared_id", "needs an agreement: eb:AgreementRef carries the id in its pmode attribute")
    leniency = _leniency(fields.table("leniency"))
    if initiator is None or responder is None:
        fields.raw("legs")
        fields.finish()
        return None
    local_side = _local_side(ctx, initiator, responder, local)
    legs: list[Leg] = []
    for index, (leg_path, leg_item) in enumerate(fields.items("legs")):
        # Push: the initiator sends leg 1 and (push-and-push) the responder the reply on leg 2.
        # One-Way/Pull: the initiator sends the PullRequest, so the user message comes from the responder.
        sender = Side.INITIATOR if index == 0 and binding is not Binding.PULL else Side.RESPONDER
        direction = Direction.OUTGOING if sender is local_side else Direction.INCOMING
        partner = (responder if local_side is Side.INITIATOR else initiator).party
        leg = _leg(ctx, Fields(ctx, leg_item, leg_path), index, sender, direction, partner, profile)
        if leg is not None:
            legs.append(leg)
    count = len(list(fields.items("legs")))
    if count != binding.legs:
        ctx.error("legs", f"binding {binding.value!r} has {binding.legs} leg(s), found {count}")
    fields.finish()
    pmode = PMode(
        id=pmode_id,
        network=profile.name,
        transport_profile=transport_profile,
        mep=mep,
        binding=binding,
        initiator=initiator,
        responder=responder,
        local=local_side,
        legs=tuple(legs),
        retention=retention,
        agreement=agreement,
        shared_id=shared_id,
        leniency=leniency,
    )
    if len(legs) == count:
        for field_path, message in profile.validate(pmode):
            ctx.error(field_path, message)
    return pmode


def _value_and_type(ctx: _Loader, fields: Fields, key: str) -> tuple[str, str | None] | None:
    # Agreements and services are a value with an optional type: a table, or a bare string for the value.
    value = fields.raw(key)
    if value is None:
        return None
    if isinstance(value, str):
        return value, None
    table = Fields(ctx, value, fields.at(key))
    text, kind = table.text("value", required=True), table.text("type")
    table.finish()
    return None if text is None else (text, kind)


def _agreement(ctx: _Loader, fields: Fields) -> Agreement | None:
    found = _value_and_type(ctx, fields, "agreement")
    return None if found is None else Agreement(*found)


def _leniency(fields: Fields) -> frozenset[WireRule]:
    # Only the rules real peers break may be relaxed (conformance.RELAXABLE); any other name is an unknown field.
    relaxed = frozenset(rule for rule in sorted(RELAXABLE) if fields.flag(rule.value, False))
    fields.finish()
    return relaxed


def _local_side(ctx: _Loader, initiator: PModeParty, responder: PModeParty, local: set[str]) -> Side:
    sides = ((Side.INITIATOR, initiator), (Side.RESPONDER, responder))
    ours = [side for side, party in sides if party.party.name in local]
    if len(ours) == 2:
        ctx.error("responder.party", "both sides are this access point's own parties")
    elif not ours:
        ctx.error("initiator.party", "neither side is one of this access point's parties (see 'self')")
    return ours[0] if ours else Side.INITIATOR


def _retention(ctx: _Loader, fields: Fields, profile: NetworkProfile) -> Retention:
    default = profile.retention
    retention = Retention(
        messages=fields.duration("messages", default.messages, forever=True),
        payloads=fields.duration("payloads", default.payloads, forever=True),
        evidence=fields.duration("evidence", default.evidence, forever=True),
    )
    fields.finish()
    # A payload is purged with (or before) its message record; it cannot outlive it.
    if retention.messages is not None and (retention.payloads is None or retention.payloads > retention.messages):
        ctx.error(fields.at("payloads"), "payloads cannot be kept longer than their messages")
    return retention


# -------------------------------------------------------------------------------------------------------- legs


def _service(ctx: _Loader, fields: Fields) -> Service | None:
    if not fields.has("service"):
        ctx.error(fields.at("service"), "is required")
    found = _value_and_type(ctx, fields, "service")
    return None if found is None else Service(*found)


def _leg(
    ctx: _Loader,
    fields: Fields,
    index: int,
    sender: Side,
    direction: Direction,
    partner: PartyDefinition,
    profile: NetworkProfile,
) -> Leg | None:
    service = _service(ctx, fields)
    action = fields.text("action", required=True)
    mpc = fields.text("mpc", profile.mpc) or profile.mpc
    properties = fields.strings("properties") if fields.has("properties") else profile.required_properties
    compression = fields.flag("compression", profile.compression)
    payload = _payload(fields.table("payload"), profile.payload)
    awareness = _reception_awareness(ctx, fields.table("reception_awareness"), profile.reception_awareness)
    error_handling = _error_handling(fields.table("error_handling"))
    security = _security(ctx, fields.table("security"), profile, direction, partner)
    fields.finish()
    if service is None or action is None or security is None:
        return None
    return Leg(
        index=index,
        sender=sender,
        direction=direction,
        service=service,
        action=action,
        mpc=mpc,
        security=security,
        reception_awareness=awareness,
        compression=compression,
        payload=payload,
        required_properties=properties,
        error_handling=error_handling,
    )


def _payload(fields: Fields, default: PayloadLimits) -> PayloadLimits:
    limits = PayloadLimits(
        max_size=fields.size("max_size", default.max_size),
        max_parts=fields.integer("max_parts", default.max_parts, minimum=1),
        decompression_limit=fields.size("decompression_limit", default.decompression_limit),
        format=fields.choice("format", PayloadFormat, default.format) or default.format,
        decompression_ratio=fields.integer("decompression_ratio", default.decompression_ratio, minimum=1),
        decompression_floor=fields.size("decompression_floor", default.decompression_floor),
    )
    fields.finish()
    return limits


def _error_handling(fields: Fields) -> ErrorHandling:
    handling = ErrorHandling(
        notify_consumer=fields.flag("notify_consumer", False),
        sender_errors_to=fields.text("sender_errors_to"),
    )
    fields.finish()
    return handling


def _reception_awareness(ctx: _Loader, fields: Fields, default: ReceptionAwareness) -> ReceptionAwareness:
    awareness = ReceptionAwareness(
        enabled=fields.flag("enabled", default.enabled),
        retries=fields.integer("retries", default.retries),
        backoff_base=fields.duration("backoff_base", default.backoff_base) or default.backoff_base,
        backoff_max=fields.duration("backoff_max", default.backoff_max) or default.backoff_max,
        jitter=fields.fraction("jitter", default.jitter),
        duplicate_detection=fields.flag("duplicate_detection", default.duplicate_detection),
        duplicate_window=fields.duration("duplicate_window", default.duplicate_window) or default.duplicate_window,
        missing_receipt=fields.flag("missing_receipt", default.missing_receipt),
    )
    fields.finish()
    if awareness.backoff_base > awareness.backoff_max:
        ctx.error(fields.at("backoff_base"), "must not exceed backoff_max")
    return awareness


# ---------------------------------------------------------------------------------------------------- security


def _security(
    ctx: _Loader, fields: Fields, profile: NetworkProfile, direction: Direction, partner: PartyDefinition
) -> SecurityPolicy | None:
    template = profile.security
    base_name = _PROFILE_NAMES[profile.security_profile]
    named = fields.text("profile")
    if named is not None and _security_profile(named) is not profile.security_profile:
        ctx.error(fields.at("profile"), f"network {profile.name} uses security profile {base_name}, not {named!r}")
    other = Profile.EDELIVERY_2_0 if profile.security_profile is Profile.EDELIVERY_1_15 else Profile.EDELIVERY_1_15
    for key in _ONLY_IN[other]:
        if fields.has(key):
            ctx.error(fields.at(key), f"is not used by security profile {base_name}")
    legacy = _legacy(ctx, fields)
    values: dict[str, Any] = {
        "sign": fields.flag("sign", template.sign),
        "encrypt": fields.flag("encrypt", template.encrypt),
        "signature_algorithm": fields.choice("signature_algorithm", SignatureAlgorithm, template.signature_algorithm),
        "digest_algorithm": fields.choice("digest_algorithm", DigestAlgorithm, template.digest_algorithm),
        "data_encryption": fields.choice("data_encryption", DataEncryption, template.data_encryption),
        "key_transport": fields.choice("key_transport", KeyTransport, template.key_transport),
        "key_agreement": fields.choice("key_agreement", KeyAgreement, template.key_agreement),
        "key_agreement_curve": fields.choice("key_agreement_curve", NamedCurve, template.key_agreement_curve),
        "key_wrap": fields.choice("key_wrap", KeyWrap, template.key_wrap),
        "token_reference": fields.choice("token_reference", TokenReference, template.token_reference),
        "require_signed_receipts": fields.flag("require_signed_receipts", template.require_signed_receipts),
        "legacy_algorithms": legacy,
    }
    trust = _trust(ctx, fields.table("trust"), template.trust, partner)
    fields.finish()
    checked = ["signature_algorithm", "digest_algorithm", "data_encryption"]
    checked += [key for key in _ONLY_IN[profile.security_profile] if key != "key_agreement_curve"]
    allowed = template.allowed_algorithms
    for key in checked:
        uri = values[key]
        if uri is not None and not (uri in legacy if uri in SHA1_BASED else uri in allowed):
            extra = " (SHA-1 based: list it under legacy_algorithms to allow it)" if uri in SHA1_BASED else ""
            ctx.error(fields.at(key), f"{short_name(uri)!r} is not allowed by profile {base_name}{extra}")
            values[key] = getattr(template, key)
    ecdh = values["key_agreement"] is KeyAgreement.ECDH_ES and profile.security_profile is Profile.EDELIVERY_2_0
    if ecdh and values["key_agreement_curve"] is None:
        ctx.error(fields.at("key_agreement_curve"), "is required with ECDH-ES key agreement")
        values["key_agreement"] = template.key_agreement
    _require_trust_material(ctx, fields, values, trust, direction, partner)
    try:
        return replace(template, trust=trust, **values)
    except ValueError as exc:  # the policy's own invariants, should a check above have missed one
        ctx.error(fields.path, str(exc))
        return None


def _security_profile(text: str) -> Profile | None:
    spelled = {"1.15": Profile.EDELIVERY_1_15, "2.0": Profile.EDELIVERY_2_0}
    spelled.update({name: profile for profile, name in _PROFILE_NAMES.items()})
    return spelled.get(text.strip()) or parse_enum(Profile, text)


def _legacy(ctx: _Loader, fields: Fields) -> frozenset[str]:
    found: set[str] = set()
    for path, item in fields.items("legacy_algorithms"):
        member = None
        if isinstance(item, str):
            member = next((m for e in _LEGACY_ENUMS if (m := parse_enum(e, item)) is not None), None)
        if member is None or member not in SHA1_BASED:
            ctx.error(path, f"{item!r} is not a SHA-1 based algorithm (only those need listing)")
            continue
        found.add(member.value)
    return frozenset(found)


def _trust(ctx: _Loader, fields: Fields, default: TrustSettings, partner: PartyDefinition) -> TrustSettings:
    pinned = ctx.certificates(fields, "pinned")
    if fields.flag("pin_partner", False):
        if partner.signing_certificate is None and ctx.require_certificates and partner.name not in ctx.broken:
            ctx.error(fields.at("pin_partner"), f"party {partner.name!r} has no signing_certificate to pin")
        elif partner.signing_certificate is not None:
            pinned += (partner.signing_certificate,)
    trust = TrustSettings(
        anchors=ctx.certificates(fields, "anchors"),
        pinned=pinned,
        intermediates=ctx.certificates(fields, "intermediates"),
        revocation=fields.choice("revocation", RevocationMode, default.revocation) or default.revocation,
        bind_cn_to_party_id=fields.flag("bind_cn_to_party_id", default.bind_cn_to_party_id),
        required_policies=_policy_oids(ctx, fields),
    )
    fields.finish()
    return trust


_OID = re.compile(r"[0-2](\.(0|[1-9][0-9]*))+")


def _policy_oids(ctx: _Loader, fields: Fields) -> tuple[str, ...]:
    found = fields.strings("required_policies")
    for index, oid in enumerate(found):
        if _OID.fullmatch(oid) is None:
            ctx.error(f"{fields.at('required_policies')}[{index}]", f"{oid!r} is not a dotted OID like 1.3.6.1.4.1.1")
    return found


def _require_trust_material(
    ctx: _Loader,
    fields: Fields,
    values: dict[str, Any],
    trust: TrustSettings,
    direction: Direction,
    partner: PartyDefinition,
) -> None:
    if not ctx.require_certificates or partner.name in ctx.broken:
        return
    encrypts = direction is Direction.OUTGOING and values["encrypt"] and not partner.dynamic
    if encrypts and partner.certificate_for_encryption is None:
        message = f"party {partner.name!r} has no encryption_certificate (or signing_certificate) to encrypt to"
        ctx.error(fields.at("encrypt"), message)
    # Signed messages and signed receipts both come from the partner: we need something to trust them by.
    verifies = values["sign"] if direction is Direction.INCOMING else values["require_signed_receipts"]
    table = fields.data.get("trust")
    pinning = isinstance(table, dict) and table.get("pin_partner") is True  # a failed pin is reported already
    if verifies and not (trust.anchors or trust.pinned or pinning):
        message = "nothing to verify the partner's signatures with: give anchors, pinned or pin_partner"
        ctx.error(fields.at("trust"), message)
