"""The JSON twin of a CSV file: the same rows, whatever the values and however the bytes arrive."""

from __future__ import annotations

import csv
import io
import json
import random

from dsr.exports.csv_files import CsvTableWriter, unguarded
from dsr.exports.json_files import JsonTwin, csv_to_json, records
from dsr.stores.base import JsonText

AWKWARD = ["", "a", "=1+2", "-x", "'=x", "@x", "+49", "a,b", 'q"q', "line\nbreak", "cr\rx", "\ttab", "ü €",
           "back\\slash", "\x01ctl", None, "'", "\u2028", '""']


def _rows_of_csv(data: bytes) -> list[list[str | None]]:
    reader = csv.reader(io.StringIO(data.decode("utf-8-sig"), newline=""))
    return [[unguarded(v) if v != "" else None for v in row] for row in reader]


def test_twin_holds_the_csv_rows_as_arrays(tmp_path):
    rng = random.Random(7)
    writer = CsvTableWriter(tmp_path / "t.csv", ["id", "v", "w"])
    rows = [[i, rng.choice(AWKWARD), rng.choice(AWKWARD)] for i in range(5000)]
    rows += [[i, "plain", "value"] for i in range(5000, 9000)]  # blocks that need no escaping at all
    for start in range(0, len(rows), 333):
        writer.write(rows[start:start + 333])
    writer.close()
    csv_to_json(tmp_path / "t.csv", tmp_path / "t.json")
    expected = _rows_of_csv((tmp_path / "t.csv").read_bytes())
    doc = json.loads((tmp_path / "t.json").read_text(encoding="utf-8"))
    assert doc["columns"] == ["id", "v", "w"]
    assert doc["rows"] == expected[1:]
    assert doc["rows"][0][0] == "0" and doc["rows"][-1] == ["8999", "plain", "value"]
    assert next(records(doc)) == dict(zip(["id", "v", "w"], expected[1], strict=True))
    # A formula guard is the CSV's business: the JSON holds the value as stored.
    assert any(r[1] == "=1+2" for r in doc["rows"]) and not any(r[1] == "'=1+2" for r in doc["rows"])


def test_twin_is_the_same_however_the_bytes_arrive(tmp_path):
    rng = random.Random(11)
    writer = CsvTableWriter(tmp_path / "t.csv", ["a", "b"])
    writer.write([[rng.choice(AWKWARD), rng.choice(AWKWARD)] for _ in range(3000)])
    writer.close()
    csv_to_json(tmp_path / "t.csv", tmp_path / "t.json")  # a megabyte at a time
    data = (tmp_path / "t.csv").read_bytes()
    twin = JsonTwin(tmp_path / "s.json")  # in pieces that cut rows, cells and quoted line breaks
    position = 3  # after the BOM
    while position < len(data):
        size = rng.randint(1, 4000)
        twin.feed(data[position:position + size])
        position += size
    twin.close()
    assert (tmp_path / "s.json").read_bytes() == (tmp_path / "t.json").read_bytes()
    assert not list(tmp_path.glob("*.partial"))  # the twin is renamed into place once complete


def test_empty_table_and_last_row_without_line_end(tmp_path):
    CsvTableWriter(tmp_path / "e.csv", ["id"]).close()
    csv_to_json(tmp_path / "e.csv", tmp_path / "e.json")
    assert json.loads((tmp_path / "e.json").read_bytes()) == {"columns": ["id"], "rows": []}
    twin = JsonTwin(tmp_path / "n.json")
    twin.feed(b"id,name\n1,x\n2,")
    twin.close()
    assert json.loads((tmp_path / "n.json").read_bytes()) == {"columns": ["id", "name"],
                                                              "rows": [["1", "x"], ["2", None]]}


def test_typed_columns_are_json_numbers_booleans_and_null_however_the_bytes_arrive(tmp_path):
    """Each block takes the fast path or the slow one; both write the same value the same way. A cell
    that is not what its kind says (SQLite keeps "abc" in an INTEGER column) is written as text."""
    rng = random.Random(5)
    kinds = ["integer", "number", "boolean", "string", "decimal", "date-time"]
    writer = CsvTableWriter(tmp_path / "t.csv", ["i", "n", "b", "s", "d", "t"], kinds)  # type: ignore[arg-type]
    odd = [["007", "1e5x", "yes", "=x", "1.50", "2026-01-01T00:00:00+00:00"]]
    rows = [[rng.choice([i, -i, None]), rng.choice([1.5, -0.25, 1e-07, 3, None]), rng.choice([True, False, None]),
             rng.choice(AWKWARD if i % 50 == 0 else ["plain", "", None, "-minus"]), rng.choice(["19.90", None]),
             "2026-03-08T16:15:10+00:00"] for i in range(4000)]
    for start in range(0, len(rows), 250):
        writer.write(rows[start:start + 250] + (odd if start == 1000 else []))
    writer.close()
    csv_to_json(tmp_path / "t.csv", tmp_path / "t.json")  # the kinds noted beside the CSV
    doc = json.loads((tmp_path / "t.json").read_text(encoding="utf-8"))
    expected = [[r[0], r[1], r[2], unguarded(r[3]) if r[3] else None, r[4], r[5]] for r in rows[:1250]]
    assert doc["rows"][:1250] == expected
    assert doc["rows"][1250] == ["007", "1e5x", "yes", "=x", "1.50", "2026-01-01T00:00:00+00:00"]
    data = (tmp_path / "t.csv").read_bytes()
    twin = JsonTwin(tmp_path / "s.json", kinds=kinds)  # type: ignore[arg-type]
    position = 3
    while position < len(data):
        size = rng.randint(1, 3000)
        twin.feed(data[position:position + size])
        position += size
    twin.close()
    assert (tmp_path / "s.json").read_bytes() == (tmp_path / "t.json").read_bytes()


def test_a_column_of_one_typed_value_and_values_of_any_json_type(tmp_path):
    writer = CsvTableWriter(tmp_path / "o.csv", ["n"], ["integer"])
    writer.write([[1], [None], [3]])
    writer.close()
    csv_to_json(tmp_path / "o.csv", tmp_path / "o.json")
    assert json.loads((tmp_path / "o.json").read_bytes())["rows"] == [[1], [None], [3]]
    writer = CsvTableWriter(tmp_path / "a.csv", ["x", "y", "z", "w"], ["any", "any", "any", "any"])
    writer.write([[1, 1, True, JsonText('{"a": [1, 2]}')], [2.5, "1", None, JsonText("[]")]])
    writer.close()
    csv_to_json(tmp_path / "a.csv", tmp_path / "a.json")
    # Numbers stay numbers; a column of numbers and text is text (the CSV cannot tell 1 from "1").
    assert json.loads((tmp_path / "a.json").read_bytes())["rows"] == [[1, "1", True, {"a": [1, 2]}],
                                                                      [2.5, "1", None, []]]
