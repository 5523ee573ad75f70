"""P-Modes: the typed agreements that govern exchanges, loaded from one YAML or TOML file.

The MSH uses ``load_pmodes`` (or ``load_if_changed`` from a watcher), then ``PModeSet.match_incoming`` for a
received UserMessage and ``PModeSet.match_submission`` for a backend submission; both give a ``Match`` whose
``route`` carries the leg, its ``SecurityPolicy``, the header parties, the endpoint and the partner certificates.
"""

from pmode.errors import PModeError, Problem
from pmode.loader import Reload, load_document, load_if_changed, load_pmodes
from pmode.matching import Match, MatchStatus, PModeSet, Route
from pmode.model import (
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

__all__ = [
    "Agreement",
    "Binding",
    "Direction",
    "ErrorHandling",
    "Leg",
    "Match",
    "MatchStatus",
    "Mep",
    "PMode",
    "PModeError",
    "PModeParty",
    "PModeSet",
    "PartyDefinition",
    "PayloadFormat",
    "PayloadLimits",
    "Problem",
    "ReceptionAwareness",
    "Reload",
    "Retention",
    "Route",
    "Side",
    "load_document",
    "load_if_changed",
    "load_pmodes",
]
