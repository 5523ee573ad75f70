"""Import of Domibus (and Harmony) P-Mode XML into our P-Mode document, reporting whatever cannot be mapped.

Domibus describes a P-Mode as a process (MEP, binding, initiator and responder parties and roles) that lists legs;
each ``legConfiguration`` names its service, action, MPC, security, reliability, reception awareness, property set
and payload profile by reference. Each (process, leg, initiator, responder) that involves this access point
becomes one of our P-Modes (a two-way push-and-push process with two legs becomes one two-leg P-Mode).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from lxml import etree

from accesspoint.core.errors import EbmsError
from accesspoint.core.namespaces import DEFAULT_MPC, MEP, MEPBinding
from accesspoint.core.xml import parse_xml
from pmode.errors import PModeError, Problem
from pmode.loader import load_document
from pmode.values import format_duration

MAX_PMODE_BYTES = 16 * 1024 * 1024
DYNAMIC_PREFIX = "dynamic-"

# WS-SecurityPolicy files Domibus ships, by what they say about the certificate reference and encryption.
POLICIES: dict[str, dict[str, Any]] = {
    "eDeliveryAS4Policy.xml": {"token_reference": "ski"},  # IncludeToken/Never + KeyIdentifier (SKI)
    "eDeliveryAS4Policy_BST.xml": {"token_reference": "bst-x509v3"},  # IncludeToken/Always
    "eDeliveryAS4Policy_IS.xml": {"token_reference": "issuer-serial"},  # RequireIssuerSerialReference
    "eDeliveryAS4Policy_BST_PKIP.xml": {"token_reference": "bst-pkipath"},  # WssX509PkiPathV1Token11
    "signOnly.xml": {"token_reference": "bst-x509v3", "encrypt": False},  # AlwaysToRecipient initiator token
    "doNothingPolicy.xml": {"sign": False, "encrypt": False},
}
SIGNATURE_METHODS = {
    "RSA_SHA256": "rsa-sha256",
    "RSA_SHA384": "rsa-sha384",
    "RSA_SHA512": "rsa-sha512",
    "RSA_SHA1": "rsa-sha1",
    "ECDSA_SHA256": "ecdsa-sha256",
    "ED25519": "ed25519",
}
BINDINGS = {
    MEPBinding.PUSH.value: "push",
    MEPBinding.PULL.value: "pull",
    MEPBinding.PUSH_AND_PUSH.value: "push-and-push",
}
MEPS = {MEP.ONE_WAY.value: "one-way", MEP.TWO_WAY.value: "two-way"}


@dataclass(frozen=True, slots=True)
class Unmapped:
    """Something in the Domibus file our model does not carry (or carries only approximately)."""

    item: str
    reason: str

    def to_json(self) -> dict[str, str]:
        """As JSON."""
        return {"item": self.item, "reason": self.reason}


@dataclass(frozen=True, slots=True)
class DomibusImport:
    """The converted document, the P-Modes it defines, and every item that could not be mapped."""

    document: dict[str, Any]
    pmode_ids: tuple[str, ...]
    unmapped: tuple[Unmapped, ...]


def _local(element: etree._Element) -> str:
    return etree.QName(element).localname if isinstance(element.tag, str) else ""


def _children(element: etree._Element | None, name: str) -> list[etree._Element]:
    return [] if element is None else [child for child in element if _local(child) == name]


def _child(element: etree._Element | None, name: str) -> etree._Element | None:
    found = _children(element, name)
    return found[0] if found else None


def _minutes(text: str | None) -> timedelta | None:
    # Domibus counts retention in minutes; a negative value keeps forever.
    try:
        minutes = int(text or "")
    except ValueError:
        return None
    return None if minutes < 0 else timedelta(minutes=minutes)


class _Importer:
    def __init__(self, root: etree._Element) -> None:
        self.root = root
        self.notes: list[Unmapped] = []
        self.business = _child(root, "businessProcesses")
        self.used_legs: set[str] = set()
        self.used_agreements: set[str] = set()

    def note(self, item: str, reason: str) -> None:
        if Unmapped(item, reason) not in self.notes:
            self.notes.append(Unmapped(item, reason))

    def attributes(self, element: etree._Element, handled: set[str], where: str) -> dict[str, str]:
        """The element's attributes; those not handled are reported rather than dropped."""
        values = {str(k): str(v) for k, v in element.attrib.items()}
        for key, value in values.items():
            if key not in handled:
                self.note(f"{where}/@{key}", f"{key}={value!r} has no equivalent in our P-Modes and was not imported")
        return values

    def named(self, container: str, element: str, handled: set[str]) -> dict[str, dict[str, str]]:
        """Every ``element`` under ``container`` by its name attribute."""
        parent = _child(self.business, container) if container else self.business
        found: dict[str, dict[str, str]] = {}
        for item in _children(parent, element):
            name = item.get("name", "")
            found[name] = self.attributes(item, handled | {"name"}, f"{element}[@name={name!r}]")
        return found

    # ----------------------------------------------------------------------------------------------- run

    def run(self) -> tuple[dict[str, Any], list[str]]:
        local = self.root.get("party")
        if local is None:
            self.note("configuration/@party", "no party attribute: which party this access point is is unknown")
        self.roles = {k: v.get("value", "") for k, v in self.named("roles", "role", {"value"}).items()}
        self.mpcs = self._mpcs()
        self.parties = self._parties()
        self.meps = {k: v.get("value", "") for k, v in self.named("meps", "mep", {"value", "legs"}).items()}
        self.bindings = {k: v.get("value", "") for k, v in self.named("meps", "binding", {"value"}).items()}
        self.property_sets = self._property_sets()
        self.payload_profiles = self._payload_profiles()
        self.securities = self.named("securities", "security", {"policy", "signatureMethod", "profile"})
        for name in self.named("errorHandlings", "errorHandling", set(self._error_handling_attributes)):
            self.note(
                f"errorHandling[@name={name!r}]",
                "error handling is fixed in this MSH: errors are answered synchronously and reported to the "
                "backend through its webhooks",
            )
        self.agreements = self.named("agreements", "agreement", {"value", "type"})
        self.services = self.named("services", "service", {"value", "type"})
        self.actions = {k: v.get("value", "") for k, v in self.named("actions", "action", {"value"}).items()}
        as4 = _child(self.business, "as4")
        self.awareness = {
            item.get("name", ""): self.attributes(item, {"name", "retry", "duplicateDetection"}, "receptionAwareness")
            for item in _children(as4, "receptionAwareness")
        }
        self.reliability = {
            item.get("name", ""): self.attributes(item, {"name", "nonRepudiation", "replyPattern"}, "reliability")
            for item in _children(as4, "reliability")
        }
        for splitting in _children(_child(self.business, "splittingConfigurations"), "splitting"):
            self.note(
                f"splitting[@name={splitting.get('name')!r}]",
                "split and join (ebMS 3 part 2) is not supported; such messages are refused with EBMS:0002",
            )
        self.legs = self.named(
            "legConfigurations",
            "legConfiguration",
            {
                "service",
                "action",
                "defaultMpc",
                "reliability",
                "security",
                "receptionAwareness",
                "propertySet",
                "payloadProfile",
                "errorHandling",
                "compressPayloads",
                "splitting",
            },
        )
        pmodes: list[dict[str, Any]] = []
        for process in _children(self.business, "process"):
            pmodes.extend(self._process(process, local or ""))
        for name in self.agreements:
            if name not in self.used_agreements:
                self.note(f"agreement[@name={name!r}]", "no process uses this agreement, so no P-Mode carries it")
        for name in self.legs:
            if name not in self.used_legs:
                self.note(f"legConfiguration[@name={name!r}]", "no process uses this leg, so no P-Mode was made of it")
        if not _children(self.business, "process"):
            self.note("process", "the file defines no process (they may be commented out), so no P-Mode")
        document: dict[str, Any] = {"version": 1, "self": local or "", "parties": self.parties, "pmodes": pmodes}
        return document, [p["id"] for p in pmodes]

    _error_handling_attributes = (
        "errorAsResponse",
        "businessErrorNotifyProducer",
        "businessErrorNotifyConsumer",
        "deliveryFailureNotifyProducer",
        "deliveryFailureNotifyConsumer",
    )

    # --------------------------------------------------------------------------------------- definitions

    def _mpcs(self) -> dict[str, dict[str, str]]:
        handled = {"qualifiedName", "enabled", "default", "retention_undownloaded", "delete_message_metadata"}
        handled |= {"retention_metadata_offset"}
        found: dict[str, dict[str, str]] = {}
        for item in _children(_child(self.root, "mpcs"), "mpc"):
            name = item.get("name", "")
            where = f"mpc[@name={name!r}]"
            found[name] = self.attributes(item, handled | {"name"}, where)
            # These retention knobs have no counterpart: ours are per P-Mode, for messages, payloads and evidence.
            reasons = {
                "retention_downloaded": "payloads are kept for retention_undownloaded whether downloaded or not",
                "retention_sent": "sent and received payloads share retention_undownloaded",
                "max_batch_delete": "purge batching is an operational setting here, not a P-Mode one",
            }
            for key, reason in reasons.items():
                self.notes = [n for n in self.notes if n.item != f"{where}/@{key}"]
                if key in found[name]:
                    self.note(f"{where}/@{key}", f"{key}={found[name][key]!r} not imported: {reason}")
        return found

    def _parties(self) -> dict[str, Any]:
        parties_element = _child(self.business, "parties")
        types = {
            item.get("name", ""): item.get("value", "")
            for item in _children(_child(parties_element, "partyIdTypes"), "partyIdType")
        }
        parties: dict[str, Any] = {}
        for item in _children(parties_element, "party"):
            name = item.get("name", "")
            where = f"party[@name={name!r}]"
            attributes = self.attributes(item, {"name", "endpoint"}, where)
            ids = []
            for identifier in _children(item, "identifier"):
                entry = {"value": identifier.get("partyId", "")}
                kind = identifier.get("partyIdType")
                if kind is not None:
                    if kind not in types:
                        self.note(f"{where}/identifier/@partyIdType", f"partyIdType {kind!r} is not defined")
                    else:
                        entry["type"] = types[kind]
                ids.append(entry)
            parties[name] = {"party_ids": ids, "endpoint": attributes.get("endpoint", "")}
            if name != self.root.get("party"):
                self.note(
                    f"{where}",
                    "Domibus keeps partner certificates in its truststore (alias = party name): add "
                    "signing_certificate (and encryption_certificate for 2.0) to this party",
                )
        return parties

    def _property_sets(self) -> dict[str, list[str]]:
        properties = self.named("properties", "property", {"key", "datatype", "required"})
        parent = _child(self.business, "properties")
        sets: dict[str, list[str]] = {}
        for item in _children(parent, "propertySet"):
            name = item.get("name", "")
            keys: list[str] = []
            for ref in _children(item, "propertyRef"):
                prop = properties.get(ref.get("property", ""), {})
                if prop.get("required") == "true":
                    keys.append(prop.get("key", ""))
                else:
                    self.note(
                        f"propertySet[@name={name!r}]/propertyRef[@property={ref.get('property')!r}]",
                        "optional message properties are not listed (ours lists the required ones only)",
                    )
                if prop.get("datatype", "string") != "string":
                    where = f"property[@name={ref.get('property')!r}]/@datatype"
                    self.note(where, "property datatypes are not checked")
            sets[name] = sorted(keys)
        return sets

    def _payload_profiles(self) -> dict[str, dict[str, Any]]:
        payloads = self.named("payloadProfiles", "payload", {"cid", "required", "mimeType", "inBody", "schemaFile"})
        profiles: dict[str, dict[str, Any]] = {}
        for item in _children(_child(self.business, "payloadProfiles"), "payloadProfile"):
            name = item.get("name", "")
            attachments = [a.get("name", "") for a in _children(item, "attachment")]
            limits: dict[str, Any] = {"max_parts": max(len(attachments), 1)}
            max_size = item.get("maxSize")
            if max_size is not None:
                try:
                    limits["max_size"] = int(max_size)
                except ValueError:
                    self.note(f"payloadProfile[@name={name!r}]/@maxSize", f"maxSize {max_size!r} is not a number")
            profiles[name] = limits
            described = ", ".join(
                f"{payloads.get(a, {}).get('cid', a)} ({payloads.get(a, {}).get('mimeType', '?')}, "
                f"{'required' if payloads.get(a, {}).get('required') == 'true' else 'optional'})"
                for a in attachments
            )
            self.note(
                f"payloadProfile[@name={name!r}]",
                f"only the part count and maxSize are imported; the per-part rules are not enforced: {described}",
            )
        return profiles

    # -------------------------------------------------------------------------------------------- legs

    def _security(self, name: str, where: str) -> tuple[dict[str, Any], str]:
        security = self.securities.get(name)
        if security is None:
            self.note(f"{where}/@security", f"security {name!r} is not defined; the profile defaults apply")
            return {}, "edelivery-1.15"
        result: dict[str, Any] = {}
        policy = security.get("policy", "")
        if policy in POLICIES:
            result.update(POLICIES[policy])
        else:
            self.note(f"security[@name={name!r}]/@policy", f"policy file {policy!r} is unknown; the defaults apply")
        network = "edelivery-1.15"
        if security.get("profile") == "ECC":
            network = "edelivery-2.0"
            result.update({"signature_algorithm": "ecdsa-sha256", "key_agreement": "ecdh-es"})
            result["key_agreement_curve"] = "secp256r1"
            reason = "Domibus' ECC profile became 2.0 with ECDSA and ECDH-ES on P-256"
            self.note(f"security[@name={name!r}]/@profile", reason)
        method = security.get("signatureMethod")
        if method is not None:
            if method in SIGNATURE_METHODS:
                result["signature_algorithm"] = SIGNATURE_METHODS[method]
                if method == "RSA_SHA1":
                    result["legacy_algorithms"] = ["rsa-sha1"]
            else:
                self.note(f"security[@name={name!r}]/@signatureMethod", f"{method!r} is unknown; the default applies")
        return result, network

    def _reception_awareness(self, name: str, where: str) -> dict[str, Any]:
        awareness = self.awareness.get(name)
        if awareness is None:
            self.note(f"{where}/@receptionAwareness", f"receptionAwareness {name!r} is not defined")
            return {}
        result: dict[str, Any] = {"duplicate_detection": awareness.get("duplicateDetection", "true") == "true"}
        retry = awareness.get("retry", "")
        parts = retry.split(";")
        strategy = parts[2].strip().upper() if len(parts) >= 3 else ""
        try:
            timeout, count = int(parts[0]), int(parts[1])
        except (ValueError, IndexError):
            timeout = count = -1
        if strategy == "SEND_ONCE" or (strategy == "CONSTANT" and count == 0):
            result.update({"retries": 0})
        elif strategy == "CONSTANT" and timeout > 0 and count > 0:
            # Domibus spreads the retries evenly over the timeout: a constant backoff of timeout / count.
            interval = format_duration(timedelta(minutes=timeout) / count)
            result.update({"retries": count, "backoff_base": interval, "backoff_max": interval, "jitter": 0.0})
        else:
            self.note(f"receptionAwareness[@name={name!r}]/@retry", f"retry {retry!r} not understood; defaults apply")
        return result

    def _leg(self, name: str) -> tuple[dict[str, Any], str] | None:
        leg = self.legs.get(name)
        where = f"legConfiguration[@name={name!r}]"
        if leg is None:
            self.note(where, "the process names a leg that is not defined")
            return None
        self.used_legs.add(name)
        service = self.services.get(leg.get("service", ""))
        action = self.actions.get(leg.get("action", ""))
        if service is None or action is None:
            self.note(where, "its service or action is not defined, so no P-Mode was made of it")
            return None
        result: dict[str, Any] = {"service": {k: v for k, v in service.items() if k in ("value", "type")}}
        result["action"] = action
        mpc = self.mpcs.get(leg.get("defaultMpc", ""), {}).get("qualifiedName", DEFAULT_MPC)
        if mpc != DEFAULT_MPC:
            result["mpc"] = mpc
        result["properties"] = self.property_sets.get(leg.get("propertySet", ""), [])
        result["compression"] = leg.get("compressPayloads", "false") == "true"
        if leg.get("payloadProfile") in self.payload_profiles:
            result["payload"] = dict(self.payload_profiles[leg.get("payloadProfile", "")])
        security, network = self._security(leg.get("security", ""), where)
        reliability = self.reliability.get(leg.get("reliability", ""), {})
        security["require_signed_receipts"] = reliability.get("nonRepudiation", "true") == "true"
        if reliability.get("replyPattern", "response") != "response":
            self.note(
                f"reliability[@name={leg.get('reliability')!r}]/@replyPattern",
                f"{reliability.get('replyPattern')!r} is not supported: receipts are returned synchronously",
            )
        result["security"] = security
        result["reception_awareness"] = self._reception_awareness(leg.get("receptionAwareness", ""), where)
        if leg.get("splitting"):
            self.note(f"{where}/@splitting", "split and join is not supported")
        return result, network

    # ------------------------------------------------------------------------------------------ processes

    def _dynamic_party(self, side: str, process: str) -> str:
        name = f"{DYNAMIC_PREFIX}{side}"
        if name not in self.parties:
            self.parties[name] = {"endpoint": "dynamic"}
        self.note(
            f"process[@name={process!r}]/{side}Parties",
            f"no {side} parties: they are found by dynamic discovery (party {name!r}); add trust anchors for them",
        )
        return name

    def _retention(self, mpc_name: str) -> dict[str, Any]:
        mpc = next((m for m in self.mpcs.values() if m.get("qualifiedName") == mpc_name), None)
        if mpc is None:
            return {}
        payloads = _minutes(mpc.get("retention_undownloaded"))
        keep_metadata = mpc.get("delete_message_metadata", "false") != "true"
        offset = _minutes(mpc.get("retention_metadata_offset")) or timedelta()
        messages = None if keep_metadata or payloads is None else payloads + offset
        return {
            "messages": "forever" if messages is None else format_duration(messages),
            "payloads": "forever" if payloads is None else format_duration(payloads),
        }

    def _process(self, process: etree._Element, local: str) -> list[dict[str, Any]]:
        name = process.get("name", "")
        where = f"process[@name={name!r}]"
        self.attributes(process, {"name", "mep", "binding", "initiatorRole", "responderRole", "agreement"}, where)
        mep = MEPS.get(self.meps.get(process.get("mep", ""), ""))
        binding = BINDINGS.get(self.bindings.get(process.get("binding", ""), ""))
        if mep is None or binding is None:
            self.note(where, f"MEP {process.get('mep')!r} / binding {process.get('binding')!r} not supported")
            return []
        initiators = [p.get("name", "") for p in _children(_child(process, "initiatorParties"), "initiatorParty")]
        responders = [p.get("name", "") for p in _children(_child(process, "responderParties"), "responderParty")]
        initiators = initiators or [self._dynamic_party("initiator", name)]
        responders = responders or [self._dynamic_party("responder", name)]
        leg_names = [leg.get("name", "") for leg in _children(_child(process, "legs"), "leg")]
        groups = [leg_names] if binding == "push-and-push" else [[leg] for leg in leg_names]
        agreement = self.agreements.get(process.get("agreement", ""))
        self.used_agreements.add(process.get("agreement", ""))
        roles = (self.roles.get(process.get("initiatorRole", "")), self.roles.get(process.get("responderRole", "")))
        pmodes: list[dict[str, Any]] = []
        for group in groups:
            converted = [leg for leg in (self._leg(n) for n in group) if leg is not None]
            if len(converted) != len(group):
                continue
            for initiator in initiators:
                for responder in responders:
                    if initiator == responder or local not in (initiator, responder):
                        why = "a party cannot exchange with itself" if initiator == responder else "neither is us"
                        self.note(f"{where} {initiator} -> {responder}", f"skipped: {why}")
                        continue
                    pmode: dict[str, Any] = {"id": f"{name}.{'+'.join(group)}.{initiator}-{responder}"}
                    pmode["network"] = converted[0][1]
                    if agreement is not None:
                        pmode["agreement"] = {k: v for k, v in agreement.items() if k in ("value", "type")}
                    pmode.update({"mep": mep, "binding": binding})
                    pmode["initiator"] = {"party": initiator, **({"role": roles[0]} if roles[0] else {})}
                    pmode["responder"] = {"party": responder, **({"role": roles[1]} if roles[1] else {})}
                    pmode["legs"] = [self._trusting(leg, initiator, responder, local) for leg, _ in converted]
                    retention = self._retention(converted[0][0].get("mpc", DEFAULT_MPC))
                    if retention:
                        pmode["retention"] = retention
                    pmodes.append(pmode)
        return pmodes

    def _trusting(self, leg: dict[str, Any], initiator: str, responder: str, local: str) -> dict[str, Any]:
        # Domibus trusts the partner's certificate from its truststore; pinning the partner is the closest match.
        partner = responder if initiator == local else initiator
        leg = {**leg, "security": dict(leg["security"])}
        if not partner.startswith(DYNAMIC_PREFIX):
            leg["security"]["trust"] = {"pin_partner": True}
        return leg


def import_domibus(data: bytes, *, file: str = "domibus-pmode.xml") -> DomibusImport:
    """Convert Domibus P-Mode XML into our document; PModeError when it is not a Domibus P-Mode at all."""
    try:
        root = parse_xml(data, max_bytes=MAX_PMODE_BYTES, what="Domibus P-Mode")
    except EbmsError as exc:
        raise PModeError([Problem(file, None, "(file)", exc.detail)]) from None
    if _local(root) != "configuration":
        raise PModeError([Problem(file, None, "(file)", f"not a Domibus P-Mode: root element {_local(root)!r}")])
    importer = _Importer(root)
    document, ids = importer.run()
    # The result must load as our P-Modes; only certificates (which Domibus keeps elsewhere) may be missing.
    load_document(document, file=file, base=Path.cwd(), require_certificates=False)
    return DomibusImport(document=document, pmode_ids=tuple(ids), unmapped=tuple(importer.notes))


def import_domibus_file(path: str | Path) -> DomibusImport:
    """``import_domibus`` of a file."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise PModeError([Problem(str(path), None, "(file)", f"cannot read: {exc.strerror}")]) from None
    return import_domibus(data, file=str(path))
