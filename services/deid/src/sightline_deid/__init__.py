"""Sightline deid service."""
