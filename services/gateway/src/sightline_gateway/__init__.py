"""Sightline gateway service."""
