"""Read models (Backup Records, Restore Records, Policies), their runner, and the Event Log."""
