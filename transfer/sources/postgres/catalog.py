"""Facts about the source that a restore needs and pg_dump's schema dump does not carry,
read in the snapshot's own transaction.

- which table each index, constraint, trigger, default, rule and policy belongs to (a
  foreign key's entry depends on two tables; only the catalog says which one owns it);
- each object's identity (`pg_identify_object_as_address`), so that a restore can ask the
  target whether it already has that object (`pg_get_object_address`);
- sequence values and whether each materialized view was populated (pg_dump keeps these in
  its data section, which a schema-only dump leaves out);
- the roles that own objects or hold grants, so a restore that keeps owners can name the
  ones the target lacks.
"""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg import sql

from transfer.sources.postgres.toc import SchemaDump

# Entries that create an object of their own: checked for existence, dropped on cleanup.
OBJECT_KINDS = frozenset(
    {
        "SCHEMA", "EXTENSION", "TYPE", "DOMAIN", "SHELL TYPE", "FUNCTION", "PROCEDURE", "AGGREGATE",
        "COLLATION", "CONVERSION", "OPERATOR", "OPERATOR CLASS", "OPERATOR FAMILY", "CAST",
        "TEXT SEARCH PARSER", "TEXT SEARCH DICTIONARY", "TEXT SEARCH TEMPLATE",
        "TEXT SEARCH CONFIGURATION", "SEQUENCE", "TABLE", "VIEW", "MATERIALIZED VIEW",
        "FOREIGN TABLE", "FOREIGN DATA WRAPPER", "SERVER", "USER MAPPING", "EVENT TRIGGER",
        "PUBLICATION", "PROCEDURAL LANGUAGE", "TRANSFORM", "ACCESS METHOD", "STATISTICS",
    }
)  # fmt: skip
RELATION_KINDS = frozenset({"TABLE", "VIEW", "MATERIALIZED VIEW", "FOREIGN TABLE", "SEQUENCE"})

# The relation a catalog row belongs to, by the catalog holding it.
_OWNER_SQL = """
SELECT x.classid, x.objid, CASE x.classid
  WHEN 'pg_constraint'::regclass THEN (SELECT nullif(conrelid, 0) FROM pg_constraint WHERE oid = x.objid)
  WHEN 'pg_trigger'::regclass THEN (SELECT tgrelid FROM pg_trigger WHERE oid = x.objid)
  WHEN 'pg_rewrite'::regclass THEN (SELECT ev_class FROM pg_rewrite WHERE oid = x.objid)
  WHEN 'pg_policy'::regclass THEN (SELECT polrelid FROM pg_policy WHERE oid = x.objid)
  WHEN 'pg_attrdef'::regclass THEN (SELECT adrelid FROM pg_attrdef WHERE oid = x.objid)
  WHEN 'pg_statistic_ext'::regclass THEN (SELECT stxrelid FROM pg_statistic_ext WHERE oid = x.objid)
  WHEN 'pg_class'::regclass THEN coalesce(
      (SELECT indrelid FROM pg_index WHERE indexrelid = x.objid),
      (SELECT refobjid FROM pg_depend WHERE classid = 'pg_class'::regclass AND objid = x.objid
         AND refclassid = 'pg_class'::regclass AND deptype IN ('a', 'i') LIMIT 1))
  END
FROM unnest(%s::oid[], %s::oid[]) AS x(classid, objid)
"""

_IDENTITY_SQL = """
SELECT x.classid, x.objid, a.type, a.object_names, a.object_args
FROM unnest(%s::oid[], %s::oid[]) AS x(classid, objid),
     LATERAL pg_identify_object_as_address(x.classid, x.objid, 0) a
"""

_ROLES_SQL = """
SELECT DISTINCT pg_get_userbyid(g.grantee) FROM (
  SELECT (aclexplode(relacl)).grantee FROM pg_class WHERE relnamespace = ANY(%(ns)s) AND relacl IS NOT NULL
  UNION ALL SELECT (aclexplode(nspacl)).grantee FROM pg_namespace WHERE oid = ANY(%(ns)s) AND nspacl IS NOT NULL
  UNION ALL SELECT (aclexplode(proacl)).grantee FROM pg_proc WHERE pronamespace = ANY(%(ns)s) AND proacl IS NOT NULL
  UNION ALL SELECT (aclexplode(typacl)).grantee FROM pg_type WHERE typnamespace = ANY(%(ns)s) AND typacl IS NOT NULL
  UNION ALL SELECT (aclexplode(attacl)).grantee FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
            WHERE c.relnamespace = ANY(%(ns)s) AND attacl IS NOT NULL
) g WHERE g.grantee <> 0
"""

# Extensions the chosen schemas need: those installed in them, and those whose member
# objects (types, operator classes, functions) the schemas' own objects depend on.
EXTENSIONS_SQL = """
WITH members AS (
  SELECT classid, objid, refobjid AS ext FROM pg_depend
  WHERE refclassid = 'pg_extension'::regclass AND deptype = 'e'),
users AS (
  SELECT d.classid, d.objid, m.ext FROM pg_depend d
  JOIN members m ON m.classid = d.refclassid AND m.objid = d.refobjid
  WHERE d.deptype IN ('n', 'a')
    AND NOT EXISTS (SELECT 1 FROM members o WHERE o.classid = d.classid AND o.objid = d.objid)),
placed AS (
  SELECT u.ext, CASE u.classid
    WHEN 'pg_class'::regclass THEN (SELECT relnamespace FROM pg_class WHERE oid = u.objid)
    WHEN 'pg_type'::regclass THEN (SELECT typnamespace FROM pg_type WHERE oid = u.objid)
    WHEN 'pg_proc'::regclass THEN (SELECT pronamespace FROM pg_proc WHERE oid = u.objid)
    WHEN 'pg_constraint'::regclass THEN (SELECT connamespace FROM pg_constraint WHERE oid = u.objid)
    WHEN 'pg_attrdef'::regclass THEN (SELECT c.relnamespace FROM pg_attrdef a JOIN pg_class c ON c.oid = a.adrelid
                                      WHERE a.oid = u.objid)
    WHEN 'pg_trigger'::regclass THEN (SELECT c.relnamespace FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid
                                      WHERE t.oid = u.objid)
    WHEN 'pg_rewrite'::regclass THEN (SELECT c.relnamespace FROM pg_rewrite r JOIN pg_class c ON c.oid = r.ev_class
                                      WHERE r.oid = u.objid)
  END AS nsp FROM users u)
SELECT e.extname FROM pg_extension e
WHERE e.oid >= 16384
  AND (e.extnamespace = ANY(%(ns)s) OR e.oid IN (SELECT ext FROM placed WHERE nsp = ANY(%(ns)s)))
ORDER BY e.extname
"""


def namespaces(conn: psycopg.Connection, schemas: list[str]) -> list[int]:
    rows = conn.execute("SELECT oid FROM pg_namespace WHERE nspname = ANY(%s)", (schemas,)).fetchall()
    return [r[0] for r in rows]


def extensions(conn: psycopg.Connection, schemas: list[str]) -> list[str]:
    return [r[0] for r in conn.execute(EXTENSIONS_SQL, {"ns": namespaces(conn, schemas)}).fetchall()]


def _by_catalog(dump: SchemaDump, kinds: frozenset[str] | None = None) -> dict[tuple[int, int], int]:
    return {
        e.catalog: e.dump_id
        for e in dump.entries
        if e.catalog[1] and e.catalog[0] and (kinds is None or e.desc in kinds)
    }


def anchors(conn: psycopg.Connection, dump: SchemaDump) -> dict[int, int]:
    """dump id of a part (index, constraint, trigger, default, ...) -> dump id of its relation."""
    relation_by_oid = {e.catalog[1]: e.dump_id for e in dump.entries if e.desc in RELATION_KINDS}
    parts = [e for e in dump.entries if e.catalog[0] and e.catalog[1]]
    found: dict[int, int] = {}
    if parts:
        ids = _by_catalog(dump)
        rows = conn.execute(
            _OWNER_SQL, ([e.catalog[0] for e in parts], [e.catalog[1] for e in parts])
        ).fetchall()
        for classid, objid, relid in rows:
            part = ids.get((classid, objid))
            owner = relation_by_oid.get(relid) if relid else None
            if part is not None and owner is not None and owner != part:
                found[part] = owner
    for e in dump.entries:
        if e.desc == "ROW SECURITY" and e.catalog[1] in relation_by_oid:
            found[e.dump_id] = relation_by_oid[e.catalog[1]]
    return found


def identities(conn: psycopg.Connection, dump: SchemaDump) -> dict[int, list[Any]]:
    """dump id -> [type, names, args], the object's address in any database."""
    objects = [e for e in dump.entries if e.desc in OBJECT_KINDS and e.catalog[0] and e.catalog[1]]
    if not objects:
        return {}
    ids = _by_catalog(dump, OBJECT_KINDS)
    rows = conn.execute(
        _IDENTITY_SQL, ([e.catalog[0] for e in objects], [e.catalog[1] for e in objects])
    ).fetchall()
    return {ids[(c, o)]: [t, list(n), list(a)] for c, o, t, n, a in rows if (c, o) in ids}


def sequence_values(conn: psycopg.Connection, dump: SchemaDump) -> dict[int, list[Any]]:
    """dump id -> [last_value, is_called], read as pg_dump reads them (a sequence is not
    transactional: the value is the one current just after the snapshot was taken, so it
    is at least as far as any row of the snapshot used)."""
    values: dict[int, list[Any]] = {}
    sequences = [e for e in dump.entries if e.desc == "SEQUENCE"]
    for start in range(0, len(sequences), 500):
        batch = sequences[start : start + 500]
        query = sql.SQL(" UNION ALL ").join(
            sql.SQL("SELECT {}::int, last_value, is_called FROM {}").format(
                sql.Literal(e.dump_id), sql.Identifier(e.namespace, e.tag)
            )
            for e in batch
        )
        for dump_id, last_value, is_called in conn.execute(query).fetchall():
            values[dump_id] = [last_value, is_called]
    return values


def populated_matviews(conn: psycopg.Connection, dump: SchemaDump) -> list[int]:
    views = {e.catalog[1]: e.dump_id for e in dump.entries if e.desc == "MATERIALIZED VIEW"}
    if not views:
        return []
    rows = conn.execute(
        "SELECT oid FROM pg_class WHERE oid = ANY(%s) AND relispopulated", (list(views),)
    ).fetchall()
    return sorted(views[r[0]] for r in rows)


def roles(conn: psycopg.Connection, dump: SchemaDump, schemas: list[str]) -> list[str]:
    names = {e.owner for e in dump.entries if e.owner}
    names.update(r[0] for r in conn.execute(_ROLES_SQL, {"ns": namespaces(conn, schemas)}).fetchall())
    return sorted(names)
