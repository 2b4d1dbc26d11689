"""Use cases and the loops that run them: deletion with its archives, retention, catalog
resync, the worker, the scheduler, the janitor and the maintenance loop. Commands that only
append events are the Application's (domain/); HTTP and the CLI call both the same way, and
api/ only wires them."""
