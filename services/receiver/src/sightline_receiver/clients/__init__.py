"""Outbound I/O: the gateway's STOW-RS intake."""
