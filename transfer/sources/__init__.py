"""Sources and targets, one module (or package) per kind, and the registry that builds them
from configuration: `registry.py`."""
