"""Every interop file of the envelope formats has a verdict in a test (that the envelopes package stays sans-I/O is
tests/test_architecture.py's)."""

from __future__ import annotations

from tests import test_envelopes_kvittens, test_envelopes_minameddelanden, test_envelopes_sbdh, test_envelopes_xhe
from tests.conftest import interop_path


def _files(folder: str, pattern: str = "*") -> set[str]:
    root = interop_path(folder)
    return {str(p.relative_to(root)) for p in root.rglob(pattern) if p.is_file()}


def test_every_xhe_example_has_a_verdict() -> None:
    """Each file in sdk/xhe/examples is in the XHE verdict table."""
    covered = {name.removeprefix("xhe/examples/") for name in test_envelopes_xhe.XHE_FILES}
    assert _files("sdk/xhe/examples") <= covered


def test_every_receipt_example_has_a_verdict() -> None:
    """Each file in sdk/kvittens/examples is in the receipt verdict table."""
    assert _files("sdk/kvittens/examples") == set(test_envelopes_kvittens.EXAMPLES)


def test_every_recorded_soap_answer_has_a_verdict() -> None:
    """Each recorded Mina meddelanden SOAP answer is in the sample table."""
    assert _files("minameddelanden/soap") == set(test_envelopes_minameddelanden.SOAP_SAMPLES)


def test_every_dpi_business_message_has_a_verdict() -> None:
    """Each DPI JSON file (samples, complete cases, token claim sets) is in the DPI table."""
    assert _files("norway-dpi/eksempler", "*.json") == set(test_envelopes_sbdh.DPI_JSON)
