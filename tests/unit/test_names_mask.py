"""mask: names (AC-25, CJEU C-579/21): staff names cut out of free text on the row-by-row path; the
COPY path does the same in SQL (tests/integration/test_sql_copy_path.py compares the two)."""

from __future__ import annotations

from typing import Any

import pytest

from dsr.datamap.model import FieldRule, Store, Table
from dsr.exports.disclosure import NAME_REMOVED, DisclosingSink, names_mask

STAFF = ["Claudia Brandt", "Jan Kowalski", "Jan Kowalski-Berg", "Dr. Petra Lange-Weiß (QS)", "  ", ""]


@pytest.mark.parametrize(("text", "expected"), [
    ("nach Rücksprache mit Claudia Brandt.", "nach Rücksprache mit […]."),
    ("CLAUDIA BRANDT und claudia brandt", "[…] und […]"),  # any letter case
    ("laut Claudia Brandts Notiz", "laut […] Notiz"),  # a genitive s
    ("Jan Kowalski's call", "[…]'s call"),
    ("an Jan Kowalski-Berg", "an […]"),  # the longer name wins, no "[…]-Berg" left over
    ("Claudia Brandtner und Brandtschutz", "Claudia Brandtner und Brandtschutz"),  # part of a longer word
    ("Dr. Petra Lange-Weiß (QS) hat geprüft", "[…] hat geprüft"),  # regular-expression characters
    ("Petra Lange-Weiß hat geprüft", "Petra Lange-Weiß hat geprüft"),  # only the name as the table has it
    ("", ""),
])
def test_names_are_cut_out_as_whole_words(text: str, expected: str) -> None:
    assert names_mask(STAFF)(text) == expected


def test_without_names_the_text_is_unchanged() -> None:
    assert names_mask([])("Claudia Brandt") == "Claudia Brandt"
    assert NAME_REMOVED == "[…]"


class _Table:
    def __init__(self) -> None:
        self.rows: list[list[Any]] = []

    def write(self, rows: Any) -> None:
        self.rows += [list(r) for r in rows]

    def close(self) -> None:
        pass


class _Sink:
    def open_table(self, name: str, columns: Any, kinds: Any = None) -> _Table:
        self.table = _Table()
        return self.table


def _store() -> Store:
    note = FieldRule("note", "agent_notes", "mask", "names", {"de": "x", "en": "x"}, names_from="employees.name")
    return Store("portal_db", "sql", {"de": "x", "en": "x"}, {}, {},
                 {"agent_notes": Table("agent_notes", "agent_notes", {"note": note}, {})})


def test_the_sink_masks_with_the_names_the_store_looked_up_and_counts_the_records() -> None:
    inner = _Sink()
    sink = DisclosingSink(inner, _store())
    asked: list[str] = []
    sink.use_names(lambda source: asked.append(source) or ["Jan Kowalski"])  # type: ignore[func-returns-value]
    writer = sink.open_table("agent_notes", ["id", "note"])
    writer.write([[1, "Anruf von Jan Kowalski"], [2, None], [3, ""]])
    assert inner.table.rows == [[1, "Anruf von […]"], [2, None], [3, ""]]
    assert asked == ["employees.name"]
    assert sink.summary() == {"agent_notes": {"note": {"disclose": "mask", "mask": "names", "records": 3,
                                                       "outcomes": {"default": 3}}}}


def test_without_a_way_to_look_names_up_the_field_is_never_written_unmasked() -> None:
    with pytest.raises(RuntimeError, match="cannot look up"):
        DisclosingSink(_Sink(), _store()).open_table("agent_notes", ["id", "note"])
