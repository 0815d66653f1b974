"""Sightline's DICOM receiver: a C-STORE/C-ECHO SCP that hands studies to the gateway's intake."""
