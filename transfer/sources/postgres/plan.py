"""What a PostgreSQL restore will run: pg_dump's entries, selected, renamed, in pg_restore's order.

A restore of the whole snapshot runs every entry of its schema dump, except those that
depend on a table the snapshot does not hold. A restore of some tables (`collections`) runs
those tables, everything they need (schemas, extensions, types, domains, functions,
sequences, collations, a partition's parent) and everything that belongs to them (defaults,
owned sequences, constraints, indexes, triggers, rules, policies, comments, grants); a
foreign key to a table that is not restored is skipped and listed, never silently lost.

A renamed table keeps what belongs to it under names that cannot collide with the
original's: its statements are re-pointed token by token (transfer/sources/postgres/sql.py), its indexes
and owned sequences get the new table name as prefix. Views and other objects that depend
on a renamed table are skipped and listed: their bodies name the original.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from psycopg import sql

from transfer.errors import TargetError
from transfer.sources.postgres.catalog import OBJECT_KINDS, RELATION_KINDS
from transfer.sources.postgres.sql import Qualified, references, rewrite, tokens
from transfer.sources.postgres.toc import NEVER_RUN, Entry, SchemaDump

MAX_IDENTIFIER = 63  # bytes: NAMEDATALEN - 1
INDEX_BACKED = ("PRIMARY", "UNIQUE", "EXCLUDE")
# Parts that may be left out when what they refer to is not restored, and are listed.
REFERRING_PARTS = frozenset({"FK CONSTRAINT", "POLICY", "TRIGGER", "RULE", "PUBLICATION TABLE"})


@dataclass
class Step:
    """One entry to run: its SQL after renames, and what it creates."""

    entry: Entry
    sql: str
    drop: str  # how cleanup removes it, when it is an object this restore creates
    phase: str  # pre-data, post-data, acl, post-acl
    creates: bool  # an object of its own (checked for existence, dropped on cleanup)
    root: int  # the object it belongs to (itself for objects)
    qualified: Qualified | None = None  # (schema, name) in the target, for relations


@dataclass
class TableLoad:
    collection: str
    dump_id: int
    schema: str
    name: str
    exists: bool = False

    @property
    def identifier(self) -> sql.Identifier:
        return sql.Identifier(self.schema, self.name)


@dataclass
class Plan:
    steps: list[Step]
    tables: dict[str, TableLoad]
    skipped: list[dict[str, str]]
    renamed: dict[int, Qualified]
    new_schemas: list[str] = field(default_factory=list)
    existing: set[int] = field(default_factory=set)  # dump ids the target already had

    def step(self, dump_id: int) -> Step | None:
        return next((s for s in self.steps if s.entry.dump_id == dump_id), None)


def describe(entry: Entry, renamed: Qualified | None = None) -> str:
    kind = entry.desc.lower()
    if entry.desc in ("ACL", "COMMENT", "SECURITY LABEL"):  # tags like "TABLE u", "COLUMN t.c"
        what, _, name = entry.tag.partition(" ")
        prefix = f"{entry.namespace}." if entry.namespace else ""
        return f"{'grants' if entry.desc == 'ACL' else kind} on {what.lower()} {prefix}{name}"
    if renamed is not None:
        return f"{kind} {renamed[0]}.{renamed[1]}"
    return f"{kind} {entry.namespace}.{entry.tag}" if entry.namespace else f"{kind} {entry.tag}"


class _Graph:
    """Which entry belongs to which: parts hang from the relation or object they are of."""

    def __init__(self, dump: SchemaDump, state: dict[str, Any]) -> None:
        self.dump = dump
        self.by_id = dump.by_id
        self.anchor: dict[int, int] = {int(k): v for k, v in state.get("anchors", {}).items()}
        relations = {(e.namespace, e.tag): e.dump_id for e in dump.entries if e.desc in RELATION_KINDS}
        indexes = {(e.namespace, e.tag): e.dump_id for e in dump.entries if e.desc == "INDEX"}
        for e in dump.entries:
            if e.dump_id in self.anchor:
                continue
            if e.desc in ("COMMENT", "SECURITY LABEL", "ACL") and e.deps:
                self.anchor[e.dump_id] = e.deps[0]
            elif e.desc == "SEQUENCE OWNED BY" and e.deps:
                self.anchor[e.dump_id] = e.deps[0]
            elif e.desc == "TABLE ATTACH" and (e.namespace, e.tag) in relations:
                self.anchor[e.dump_id] = relations[(e.namespace, e.tag)]
            elif e.desc == "INDEX ATTACH" and (e.namespace, e.tag) in indexes:
                self.anchor[e.dump_id] = indexes[(e.namespace, e.tag)]
        self.partitioned = set(state.get("partitioned", []))

    def root(self, dump_id: int) -> int:
        seen = set()
        while dump_id in self.anchor and dump_id not in seen:
            seen.add(dump_id)
            dump_id = self.anchor[dump_id]
        return dump_id

    def is_part(self, e: Entry) -> bool:
        return e.dump_id in self.anchor

    def relation_deps(self, e: Entry) -> set[int]:
        return {d for d in e.deps if d in self.by_id and self.by_id[d].desc in RELATION_KINDS}


def _pull(graph: _Graph, start: Iterable[int]) -> set[int]:
    """Objects the start needs: schemas, types, functions, sequences... and a table's
    parents (partitions and inheritance), never views or unrelated tables."""
    seen: set[int] = set()
    todo = list(start)
    while todo:
        dump_id = todo.pop()
        if dump_id in seen:
            continue
        seen.add(dump_id)
        e = graph.by_id[dump_id]
        for dep in e.deps:
            d = graph.by_id.get(dep)
            if d is None or d.desc in NEVER_RUN or dep in seen:
                continue
            if graph.is_part(d):
                continue
            if d.desc in ("VIEW", "MATERIALIZED VIEW", "FOREIGN TABLE"):
                continue
            if d.desc == "TABLE" and e.desc != "TABLE":
                continue
            todo.append(dep)
    return seen


def _index_backed(entry: Entry) -> bool:
    words = [t.keyword for t in tokens(entry.defn) if t.kind == "word"]
    for i, word in enumerate(words[:-1]):
        if word == "CONSTRAINT" and i + 2 < len(words):
            return words[i + 2] in INDEX_BACKED
    return False


def _fit(name: str) -> str:
    raw = name.encode()
    if len(raw) <= MAX_IDENTIFIER:
        return name
    return raw[:MAX_IDENTIFIER].decode(errors="ignore")


def _new_name(old: str, table: str, new_table: str, taken: set[str]) -> str:
    base = new_table + old[len(table) :] if old.startswith(table) else f"{new_table}_{old}"
    candidate, n = _fit(base), 1
    while candidate in taken:
        suffix = f"_{n}"
        candidate = _fit(base[: MAX_IDENTIFIER - len(suffix)]) + suffix
        n += 1
    taken.add(candidate)
    return candidate


def _quoted(schema: str, name: str) -> str:
    def q(part: str) -> str:
        return '"' + part.replace('"', '""') + '"'

    return f"{q(schema)}.{q(name)}"


def build(
    dump: SchemaDump,
    state: dict[str, Any],
    collections: list[str] | None,
    mapping: dict[str, str],
    taken_names: dict[str, set[str]] | None = None,
) -> Plan:
    """collections None: the whole snapshot. taken_names: relation names per schema in the
    target, so new index and sequence names of renamed tables avoid them."""
    graph = _Graph(dump, state)
    archived: dict[str, dict[str, Any]] = state["tables"]
    unknown = [c for c in (collections or []) if c not in archived]
    if unknown:
        raise TargetError(f"the snapshot has no table {unknown[0]!r}")
    for name in mapping:
        if name not in archived:
            raise TargetError(f"mapping names {name!r}, which the snapshot does not hold")
    chosen = {archived[c]["dump_id"]: c for c in (collections or archived)}
    skipped: list[dict[str, str]] = []
    runnable = [e for e in dump.entries if e.desc not in NEVER_RUN]

    # Tables the restore leaves out: for the whole snapshot those the policy did not back
    # up; for a selection every table it does not need. What needs them stays out too.
    if collections is None:
        base = {e.dump_id for e in runnable if not graph.is_part(e)}
        data_tables = {v["dump_id"] for v in archived.values()}
        blocked = {
            e.dump_id
            for e in runnable
            if e.desc == "TABLE" and e.dump_id not in data_tables and e.dump_id not in graph.partitioned
        }
    else:
        base = _pull(graph, chosen)
        blocked = {e.dump_id for e in runnable if e.desc == "TABLE" and e.dump_id not in base}
    renamed = _renames(dump, graph, archived, mapping)
    included: set[int] = set()
    for e in runnable:  # TOC order: an entry's dependencies come before it
        if e.dump_id not in base or graph.is_part(e) or e.dump_id in blocked:
            continue
        needs = next((d for d in e.deps if d in blocked), None)
        if needs is not None:
            skipped.append(
                {"object": describe(e), "reason": f"needs {describe(graph.by_id[needs])}, not restored"}
            )
            blocked.add(e.dump_id)
            continue
        into = next((d for d in graph.relation_deps(e) if d in renamed and d != e.dump_id), None)
        if into is not None:
            skipped.append(
                {
                    "object": describe(e),
                    "reason": f"refers to {describe(graph.by_id[into])}, which is restored renamed",
                }
            )
            blocked.add(e.dump_id)
            continue
        included.add(e.dump_id)

    # Parts, until nothing changes: each needs its object, and what it refers to.
    changed = True
    parts_done: set[int] = set()
    while changed:
        changed = False
        for e in runnable:
            if e.dump_id in parts_done or not graph.is_part(e):
                continue
            root = graph.root(e.dump_id)
            if root not in included or graph.anchor[e.dump_id] not in included:
                continue
            parts_done.add(e.dump_id)
            changed = True
            others = graph.relation_deps(e) - {root, graph.anchor[e.dump_id]}
            absent = [d for d in others if d not in included]
            if absent:
                if e.desc in REFERRING_PARTS:
                    skipped.append(
                        {
                            "object": describe(e),
                            "reason": f"refers to {describe(graph.by_id[absent[0]])}, not restored",
                        }
                    )
                continue
            into_renamed = [d for d in others if d in renamed and e.desc not in ("FK CONSTRAINT",)]
            if into_renamed and root not in renamed:
                skipped.append(
                    {
                        "object": describe(e),
                        "reason": f"refers to {describe(graph.by_id[into_renamed[0]])}, "
                        "which is restored renamed",
                    }
                )
                continue
            pulled = _pull(
                graph, [d for d in e.deps if d in graph.by_id and not graph.is_part(graph.by_id[d])]
            )
            for dep in pulled:
                if dep not in included and graph.by_id[dep].desc not in RELATION_KINDS:
                    included.add(dep)
            included.add(e.dump_id)

    steps = _steps(dump, graph, included, renamed, taken_names or {}, state)
    tables = {}
    for collection, dump_id in ((c, archived[c]["dump_id"]) for c in chosen.values()):
        schema, name = renamed.get(dump_id, (archived[collection]["schema"], archived[collection]["name"]))
        tables[collection] = TableLoad(collection, dump_id, schema, name)
    new_schemas = sorted({s for s, _ in renamed.values()})
    return Plan(steps, tables, skipped, renamed, new_schemas)


def _renames(
    dump: SchemaDump, graph: _Graph, archived: dict[str, dict[str, Any]], mapping: dict[str, str]
) -> dict[int, Qualified]:
    renamed: dict[int, Qualified] = {}
    attached = {graph.anchor[e.dump_id] for e in dump.entries if e.desc == "TABLE ATTACH"}
    for collection, as_name in mapping.items():
        info = archived[collection]
        schema, dot, rest = as_name.partition(".")
        new = (schema, rest) if dot and rest else (info["schema"], as_name)
        if not new[0] or not new[1]:
            raise TargetError(f"mapping {collection!r} -> {as_name!r} does not name a table")
        dump_id = info["dump_id"]
        if dump_id in attached or dump_id in graph.partitioned:
            raise TargetError(
                f"cannot restore {collection} under another name: it is a partition of a partitioned "
                "table (restore it without a mapping, or into another database)"
            )
        if new != (info["schema"], info["name"]):
            renamed[dump_id] = new
    targets = list(renamed.values())
    if len(set(targets)) != len(targets):
        raise TargetError("mapping sends two tables to the same name")
    return renamed


def _steps(
    dump: SchemaDump,
    graph: _Graph,
    included: set[int],
    renamed: dict[int, Qualified],
    taken: dict[str, set[str]],
    state: dict[str, Any],
) -> list[Step]:
    relations: dict[Qualified, str] = {}
    names_of: dict[int, dict[str, str]] = {}  # renamed table -> unqualified old -> new quoted
    new_relation: dict[int, Qualified] = dict(renamed)
    for table_id, (schema, name) in renamed.items():
        table = graph.by_id[table_id]
        relations[(table.namespace, table.tag)] = _quoted(schema, name)
        used = taken.setdefault(schema, set())
        names: dict[str, str] = {}
        for e in dump.entries:
            if e.dump_id not in included or graph.root(e.dump_id) != table_id or e.dump_id == table_id:
                continue
            if e.desc == "SEQUENCE" or e.desc == "INDEX":
                old = e.tag
            elif e.desc == "CONSTRAINT" and _index_backed(e):
                old = e.tag[len(table.tag) + 1 :] if e.tag.startswith(table.tag + " ") else e.tag
            else:
                continue
            new = _new_name(old, table.tag, name, used)
            names[old] = '"' + new.replace('"', '""') + '"'
            if e.desc in ("SEQUENCE", "INDEX"):
                relations[(e.namespace, e.tag)] = _quoted(schema, new)
                new_relation[e.dump_id] = (schema, new)
        names_of[table_id] = names
    renamed_roots = set(renamed)
    steps = []
    for e in dump.entries:
        if e.dump_id not in included:
            continue
        root = graph.root(e.dump_id)
        section = dump.effective_section[e.dump_id]
        phase = {"acl": "acl", "post-acl": "post-acl"}.get(e.restore_pass, section)
        text, drop = e.defn, e.drop_stmt
        touches = root in renamed_roots or bool(graph.relation_deps(e) & renamed_roots)
        if touches and relations:
            root_names = names_of.get(root) if root in renamed_roots else None
            text = rewrite(text, relations, root_names)
            drop = rewrite(drop, relations, root_names)
            old_relations = {(graph.by_id[t].namespace, graph.by_id[t].tag) for t in renamed_roots}
            if references(text, old_relations):
                raise TargetError(
                    f"cannot rename the tables {describe(e)} refers to: its definition names them "
                    "in a form this restore does not re-point"
                )
        steps.append(
            Step(
                entry=e,
                sql=text,
                drop=drop,
                phase=phase,
                creates=e.desc in OBJECT_KINDS and (not graph.is_part(e) or e.desc == "SEQUENCE"),
                root=root,
                qualified=new_relation.get(
                    e.dump_id, (e.namespace, e.tag) if e.desc in RELATION_KINDS else None
                ),
            )
        )
    return steps
