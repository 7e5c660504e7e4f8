"""hisguard: monitoring with automatic emergency-plan triggering for hospital information systems."""

__version__ = "0.1.0"
