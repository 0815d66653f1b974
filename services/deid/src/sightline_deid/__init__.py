"""Sightline de-identification service: DICOM PS3.15 Basic Profile with options, fail closed."""
