"""test_decoding's lines read back exactly: every spelling contrib/test_decoding writes."""

from __future__ import annotations

import pytest

from transfer.sources.postgres.decoding import Column, DecodingError, parse_change


def test_an_insert_with_every_spelling_of_a_value():
    line = (
        "table public.orders: INSERT: id[integer]:1 note[text]:'it''s ''quoted'' \"too\"' "
        "tags[text[]]:'{a,\"b c\"}' total[numeric]:-1.5e+20 ok[boolean]:true bits[bit varying]:B'101' "
        "gone[text]:null word[text]:'null' at[timestamp with time zone]:'2026-12-01 10:00:00+00' "
        "f[double precision]:NaN"
    )
    change = parse_change(line)
    assert change.action == "INSERT" and change.table == ("public", "orders")
    assert change.new == (
        Column("id", "integer", "1"),
        Column("note", "text", "it's 'quoted' \"too\""),
        Column("tags", "text[]", '{a,"b c"}'),
        Column("total", "numeric", "-1.5e+20"),
        Column("ok", "boolean", "true"),
        Column("bits", "bit varying", "101"),
        Column("gone", "text", None),
        Column("word", "text", "null"),  # the text 'null' is not SQL NULL
        Column("at", "timestamp with time zone", "2026-12-01 10:00:00+00"),
        Column("f", "double precision", "NaN"),
    )


def test_quoted_names_with_spaces_dots_quotes_and_colons():
    line = 'table "Odd Schema"."a.b: ""c""": INSERT: "Mixed Col"[text]:\'x\' "k[1]"[integer]:2'
    change = parse_change(line)
    assert change.table == ("Odd Schema", 'a.b: "c"')
    assert [(c.name, c.value) for c in change.new] == [("Mixed Col", "x"), ("k[1]", "2")]


def test_an_update_with_its_old_key_and_an_untouched_toasted_value():
    line = (
        "table shop.orders: UPDATE: old-key: id[integer]:1 new-tuple: id[integer]:2 "
        "body[text]:unchanged-toast-datum note[text]:' new-tuple: inside'"
    )
    change = parse_change(line)
    assert change.old == (Column("id", "integer", "1"),)
    assert change.new == (
        Column("id", "integer", "2"),
        Column("body", "text", None, unchanged=True),
        Column("note", "text", " new-tuple: inside"),
    )


def test_an_update_without_old_key_and_a_delete_by_key():
    update = parse_change("table shop.t: UPDATE: id[integer]:1 v[text]:'b'")
    assert update.old == () and [c.name for c in update.new] == ["id", "v"]
    delete = parse_change("table shop.t: DELETE: id[integer]:1")
    assert delete.old == (Column("id", "integer", "1"),) and delete.new == ()


def test_truncate_of_several_tables_with_its_flags():
    change = parse_change('table shop.a, "Odd".b: TRUNCATE: restart_seqs cascade')
    assert change.tables == (("shop", "a"), ("Odd", "b"))
    assert change.flags == {"restart_seqs", "cascade"}
    assert parse_change("table shop.a: TRUNCATE: (no-flags)").flags == frozenset()


@pytest.mark.parametrize(
    ("line", "needle"),
    [
        ("table shop.t: DELETE: (no-tuple-data)", "no replica identity"),
        ("table shop.t: INSERT: v[text]:'unterminated", "unterminated literal"),
        ("table shop.t: INSERT: v[text", "unterminated type"),
        ("table t: INSERT: v[text]:'x'", "schema-qualified"),
        ("table shop.t: MERGE: v[text]:'x'", "unknown change"),
        ("BEGIN 12", "not a change"),
        ("table shop.t: INSERT: v[text]:'x' trailing", r"expected \[type\] after column .trailing."),
    ],
)
def test_what_test_decoding_never_writes_is_refused(line, needle):
    with pytest.raises(DecodingError, match=needle):
        parse_change(line)
