"""Shared library of the Sightline services (one copy, imported by every service)."""

__version__ = "0.1.0"
