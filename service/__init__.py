"""The use cases that do more than append events: they also move or remove data (archives
in storage, a location's catalog). Commands that only append events are the Application's
(domain/application.py). HTTP and the CLI call both the same way; api/ only wires them."""
