"""Intra-procedural guidance (registration, needle detection, live sources)."""
