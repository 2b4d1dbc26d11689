"""Tests of the data plane: sources, targets, storage, archives, pipelines, the worker."""
