"""Third-party integration broker with field-level scoped sharing."""

__version__ = "0.1.0"
__all__ = ["__version__"]
