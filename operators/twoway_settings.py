"""The operator's two-way settings: ``[operator.two_way]``, ``[operator.presentation]``, ``[operator.timestamping]``.

```toml
[operator.two_way]
sweep_interval = "10s"          # how often deadlines are looked at and unsent answers sent again
answer_max_size = "16MiB"       # the largest holder's answer (JSON with base64 attachments) taken in
payment_provider = "reference"  # the reference provider: no bank, no money moved (operators/payments.py)

[operator.presentation]         # without this table content is not checked against a presentation policy
content_types = ["application/pdf", "text/plain", "text/html"]
max_part_size = "64MiB"
pdf_a = true                    # PDFs must declare PDF/A conformance
max_html_size = "2MiB"

[operator.timestamping]         # the RFC 3161 time-stamp authority of the delgivningskvitto
url = "https://tsa.example/"
trust = ["tsa-ca.pem"]          # anchors of the authority's certificate
timeout = "10s"
```
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta

from cryptography import x509

from accesspoint.servicekit.settings import Section
from operators.presentation import PresentationPolicy

KNOWN = frozenset({"two_way", "presentation", "timestamping"})


@dataclass(frozen=True, slots=True)
class TimestampingSettings:
    """Where time-stamps come from and whom to believe about them."""

    url: str
    anchors: tuple[x509.Certificate, ...]
    timeout: timedelta = timedelta(seconds=10)


@dataclass(frozen=True, slots=True)
class TwoWaySettings:
    """See the module docstring."""

    sweep_interval: timedelta = timedelta(seconds=10)
    answer_max_size: int = 16 * 1024 * 1024
    payment_provider: str = "reference"
    presentation: PresentationPolicy | None = None
    timestamping: TimestampingSettings | None = field(default=None)


def read_two_way(
    table: Section, certificates: Callable[[Section, str], tuple[x509.Certificate, ...]]
) -> TwoWaySettings:
    """The two-way settings of an ``[operator]`` table (mistakes recorded on the reader, named by field);
    ``certificates`` reads a list of certificate files as the rest of the settings do."""
    two_way = table.section("two_way", known={"sweep_interval", "answer_max_size", "payment_provider"})
    presentation = None
    if table.has("presentation"):
        policy = table.section("presentation", known={"content_types", "max_part_size", "pdf_a", "max_html_size"})
        default = PresentationPolicy()
        presentation = PresentationPolicy(
            content_types=frozenset(
                t.lower() for t in policy.strings("content_types", tuple(default.content_types), what="MIME types")
            ),
            max_part_size=policy.size("max_part_size", default.max_part_size, positive=True),
            pdf_a=policy.boolean("pdf_a", default.pdf_a),
            max_html_size=policy.size("max_html_size", default.max_html_size, positive=True),
        )
    timestamping = None
    if table.has("timestamping"):
        tsa = table.section("timestamping", known={"url", "trust", "timeout"})
        url = tsa.url("url", required=True) or ""
        anchors = certificates(tsa, "trust")
        if not anchors:
            tsa.mistake("trust", "at least one anchor of the time-stamp authority is required")
        timestamping = TimestampingSettings(url, anchors, tsa.duration("timeout", "10s", positive=True))
    provider = two_way.string("payment_provider", "reference")
    if provider != "reference":
        two_way.mistake("payment_provider", f"{provider!r}: the only provider here is 'reference'")
    return TwoWaySettings(
        sweep_interval=two_way.duration("sweep_interval", "10s", positive=True),
        answer_max_size=two_way.size("answer_max_size", 16 * 1024 * 1024, positive=True),
        payment_provider=provider,
        presentation=presentation,
        timestamping=timestamping,
    )
