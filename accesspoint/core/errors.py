"""The one ebMS error table (ebMS 3.0 core section 6.7 and AS4 section 5.2) and the one exception type."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum, StrEnum


class Severity(StrEnum):
    """eb:Error/@severity."""

    FAILURE = "failure"
    WARNING = "warning"


class Category(StrEnum):
    """eb:Error/@category."""

    CONTENT = "Content"
    COMMUNICATION = "Communication"
    UNPACKAGING = "UnPackaging"
    PROCESSING = "Processing"


@dataclass(frozen=True, slots=True)
class ErrorSpec:
    """One row of the error table."""

    code: str
    short_description: str
    severity: Severity
    category: Category
    description: str


class ErrorCode(Enum):
    """Every ebMS 3 / AS4 error code; the value is the row of the table."""

    VALUE_NOT_RECOGNIZED = ErrorSpec(
        "EBMS:0001",
        "ValueNotRecognized",
        Severity.FAILURE,
        Category.CONTENT,
        "Although the message is well formed and schema valid, a value could not be recognized.",
    )
    FEATURE_NOT_SUPPORTED = ErrorSpec(
        "EBMS:0002",
        "FeatureNotSupported",
        Severity.WARNING,
        Category.CONTENT,
        "The message uses a feature that this MSH does not support.",
    )
    VALUE_INCONSISTENT = ErrorSpec(
        "EBMS:0003",
        "ValueInconsistent",
        Severity.FAILURE,
        Category.CONTENT,
        "An element or attribute value is inconsistent with other elements or attributes.",
    )
    OTHER = ErrorSpec(
        "EBMS:0004", "Other", Severity.FAILURE, Category.CONTENT, "An error occurred that no other code describes."
    )
    CONNECTION_FAILURE = ErrorSpec(
        "EBMS:0005",
        "ConnectionFailure",
        Severity.FAILURE,
        Category.COMMUNICATION,
        "The MSH could not connect to the next MSH.",
    )
    EMPTY_MPC = ErrorSpec(
        "EBMS:0006",
        "EmptyMessagePartitionChannel",
        Severity.WARNING,
        Category.COMMUNICATION,
        "There is no message available for pulling from this MPC.",
    )
    MIME_INCONSISTENCY = ErrorSpec(
        "EBMS:0007",
        "MimeInconsistency",
        Severity.FAILURE,
        Category.UNPACKAGING,
        "The MIME packaging of the message does not follow SOAP with Attachments.",
    )
    FEATURE_NOT_SUPPORTED_UNPACKAGING = ErrorSpec(
        "EBMS:0008",
        "FeatureNotSupported",
        Severity.FAILURE,
        Category.UNPACKAGING,
        "The message is packaged with a feature that this MSH does not support.",
    )
    INVALID_HEADER = ErrorSpec(
        "EBMS:0009",
        "InvalidHeader",
        Severity.FAILURE,
        Category.UNPACKAGING,
        "The ebMS header is not well formed or not valid against the ebMS 3 header schema.",
    )
    PROCESSING_MODE_MISMATCH = ErrorSpec(
        "EBMS:0010",
        "ProcessingModeMismatch",
        Severity.FAILURE,
        Category.PROCESSING,
        "The message does not match the processing mode (P-Mode) that governs it.",
    )
    EXTERNAL_PAYLOAD_ERROR = ErrorSpec(
        "EBMS:0011",
        "ExternalPayloadError",
        Severity.FAILURE,
        Category.CONTENT,
        "A payload referenced by PartInfo could not be resolved.",
    )
    FAILED_AUTHENTICATION = ErrorSpec(
        "EBMS:0101",
        "FailedAuthentication",
        Severity.FAILURE,
        Category.PROCESSING,
        "The signature or the sender's authentication could not be verified.",
    )
    FAILED_DECRYPTION = ErrorSpec(
        "EBMS:0102", "FailedDecryption", Severity.FAILURE, Category.PROCESSING, "The message could not be decrypted."
    )
    POLICY_NONCOMPLIANCE = ErrorSpec(
        "EBMS:0103",
        "PolicyNoncompliance",
        Severity.FAILURE,
        Category.PROCESSING,
        "The message does not comply with the security policy.",
    )
    DYSFUNCTIONAL_RELIABILITY = ErrorSpec(
        "EBMS:0201",
        "DysfunctionalReliability",
        Severity.FAILURE,
        Category.PROCESSING,
        "Reliable messaging could not be performed.",
    )
    DELIVERY_FAILURE = ErrorSpec(
        "EBMS:0202", "DeliveryFailure", Severity.FAILURE, Category.COMMUNICATION, "The message could not be delivered."
    )
    MISSING_RECEIPT = ErrorSpec(
        "EBMS:0301",
        "MissingReceipt",
        Severity.FAILURE,
        Category.COMMUNICATION,
        "No receipt was received for the message.",
    )
    INVALID_RECEIPT = ErrorSpec(
        "EBMS:0302",
        "InvalidReceipt",
        Severity.FAILURE,
        Category.COMMUNICATION,
        "The receipt is invalid or does not refer to the message sent.",
    )
    DECOMPRESSION_FAILURE = ErrorSpec(
        "EBMS:0303",
        "DecompressionFailure",
        Severity.FAILURE,
        Category.COMMUNICATION,
        "A payload could not be decompressed.",
    )

    @property
    def code(self) -> str:
        """The wire code, e.g. ``EBMS:0009``."""
        return self.value.code

    @classmethod
    def from_code(cls, code: str) -> ErrorCode | None:
        """The table row for a wire code (``EBMS:0009``), or None when unknown."""
        return _BY_CODE.get(code.strip())


_BY_CODE = {member.value.code: member for member in ErrorCode}

# Details go on the wire; they are bounded so an error signal never echoes an attacker's megabytes.
MAX_DETAIL = 512


class EbmsError(Exception):
    """An ebMS processing error: the code, category and severity the shell turns into an eb:Error signal.

    ``detail`` is what may go on the wire; ``log_detail`` is what goes to the log only (crypto failures stay
    generic on the wire).
    """

    def __init__(
        self,
        code: ErrorCode,
        detail: str = "",
        *,
        ref_to_message_id: str | None = None,
        log_detail: str | None = None,
        severity: Severity | None = None,
        description: str | None = None,
    ) -> None:
        self.error_code = code
        self.detail = detail[:MAX_DETAIL]
        # eb:Description: human-readable text beside an ErrorDetail a network fixes (SDK's NOT_SERVICED).
        self.description = None if description is None else description[:MAX_DETAIL]
        self.ref_to_message_id = ref_to_message_id
        self.log_detail = log_detail if log_detail is not None else detail
        self.severity = severity or code.value.severity
        super().__init__(f"{code.code} {code.value.short_description}: {self.log_detail}")

    @property
    def code(self) -> str:
        """The wire code, e.g. ``EBMS:0009``."""
        return self.error_code.code

    @property
    def category(self) -> Category:
        """The error's category from the table."""
        return self.error_code.value.category

    @property
    def short_description(self) -> str:
        """The short description from the table."""
        return self.error_code.value.short_description
