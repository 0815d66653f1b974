"""Sightline preprocess service."""
