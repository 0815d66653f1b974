"""Sightline command line: the local stack, training, evaluation, reports."""
