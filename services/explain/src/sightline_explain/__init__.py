"""Sightline explain service."""
