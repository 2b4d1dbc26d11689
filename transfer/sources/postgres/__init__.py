"""PostgreSQL as a source and a target: pg_dump for the schema (`toc`, `tools`), COPY for
the rows, and a restore plan (`plan`, `apply`) that can also fill an existing database."""
