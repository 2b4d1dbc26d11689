"""The data plane: sources and targets (`sources/`), storage (`storage/`), the archive format
(`archive/`) and the backup, restore and verify runs (`runs/`), behind the typed ports of
`ports.py`. Nothing here knows of events, views or the API."""
