"""Launchers for the real local pieces (Pub/Sub emulator), traffic, and the demo."""
