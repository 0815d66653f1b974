"""The DIMSE boundary: the SCP and its event handlers."""
