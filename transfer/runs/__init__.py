"""Backup, restore and verify runs: each streams between a source or target and storage,
and reports progress through a callback; none of them knows of events."""
