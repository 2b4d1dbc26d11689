"""Tests of the use cases that also move data: deletion, retention, catalog resync."""
