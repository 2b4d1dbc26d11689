"""PostgreSQL as a source and a target.

- `source.py`: a backup in one exported snapshot, pg_dump for the schema, COPY for rows.
- `target.py`, `session.py`: a restore, pg_restore's order and rules, into new or existing tables.
- `plan.py`, `apply.py`, `scheduler.py`: the restore plan, running it, and its parallel part.
- `spool.py`: a table's rows between the archive and a loading connection.
- `toc.py`, `tools.py`, `catalog.py`, `sql.py`: reading pg_dump's archive, finding the tools
  that match the server, the catalog queries, SQL text handling.
- `members.py`, `connection.py`: what an archive holds besides rows; connecting.
- `legacy.py`: restoring archives of format 1 (definitions per table).
"""
