"""An eDelivery AS4 access point: ebMS 3.0 / AS4 with the eDelivery AS4 1.15 and 2.0 profiles."""

__version__ = "0.1.0"
