"""eventsourcing's PostgreSQL store, with every libpq parameter of `database.url`.

The library's settings carry host, port, user, database and password only; `sslmode`,
`sslrootcert`, `target_session_attrs` and the rest would be dropped. This factory gives
them to the connection pool before it opens its first connection.
"""

from __future__ import annotations

import json
from typing import Any

from eventsourcing.postgres import PostgresFactory

PARAMETERS = "SNAPLEDGER_POSTGRES_PARAMETERS"  # JSON object of libpq keywords


class PostgresWithParameters(PostgresFactory):
    def __init__(self, env: Any) -> None:
        super().__init__(env)
        extra = json.loads(self.env.get(PARAMETERS) or "{}")
        if extra:
            kwargs = self.datastore.pool.kwargs
            assert isinstance(kwargs, dict)  # eventsourcing builds its pool with a dict of keywords
            kwargs.update(extra)  # the pool opens on first use, after this
