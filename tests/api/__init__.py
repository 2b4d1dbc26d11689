"""Tests of the entry points: the JSON API, the console, the CLI, configuration, serve."""
