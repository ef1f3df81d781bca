"""The jsonl connector: rotated and compressed log files, matching, streaming, validation, check."""

from __future__ import annotations

import gzip
import json
import random
import tracemalloc
from collections.abc import Mapping, Sequence
from pathlib import Path, PurePosixPath
from typing import Any, BinaryIO

import pytest

from dsr.datamap.model import FieldRule, Store, Table
from dsr.demo import logs
from dsr.stores import ConnectorContext, StoreUnavailable, Subject, connector_class
from dsr.stores.jsonl import JsonlConnector, _rotation_key

MAX = "max.mustermann@example.com"
IDENTITIES = {"email": {"field": "user"}, "customer_id": {"field": "account"}, "ip_address": {"field": "remote_addr"}}


# --- helpers ---------------------------------------------------------------------------------


class Writer:
    def __init__(self, name: str, columns: Sequence[str]) -> None:
        self.name, self.columns = name, list(columns)
        self.batches: list[list[list[Any]]] = []
        self.closed = 0

    def write(self, rows: Sequence[Sequence[Any]]) -> None:
        self.batches.append([list(r) for r in rows])

    def close(self) -> None:
        self.closed += 1

    @property
    def rows(self) -> list[dict[str, Any]]:
        return [dict(zip(self.columns, r, strict=True)) for batch in self.batches for r in batch]


class ListSink:
    def __init__(self) -> None:
        self.tables: list[Writer] = []

    def open_table(self, name: str, columns: Sequence[str], kinds: Any = None) -> Writer:
        self.tables.append(Writer(name, columns))
        return self.tables[-1]

    def add_file(self, table: str, name: str, content: BinaryIO) -> None:  # pragma: no cover - not used
        raise AssertionError("a log store has no files")

    @property
    def only(self) -> Writer:
        assert len(self.tables) == 1
        return self.tables[0]


def store(folder: Path | str, *, pattern: str = "access.log*", identities: Mapping[str, Any] = IDENTITIES,
          fields: Mapping[str, FieldRule] | None = None, options: Mapping[str, Any] | None = None,
          **connection: Any) -> Store:
    table = Table("requests", "web_server_logs", fields or {}, dict(options or {}))
    return Store("web_logs", "jsonl", {"de": "Protokolle", "en": "logs"},
                 {"path": str(folder), "pattern": pattern, **connection}, dict(identities), {"requests": table})


def connect(s: Store, instance_dir: Path | None = None) -> JsonlConnector:
    return JsonlConnector(s, ConnectorContext(instance_dir or Path("/nonexistent-instance")))


def write(path: Path, lines: Sequence[dict[str, Any] | str | bytes]) -> None:
    data = b"".join((line if isinstance(line, bytes) else
                     (line if isinstance(line, str) else json.dumps(line)).encode()) + b"\n" for line in lines)
    if path.suffix == ".gz":
        with gzip.open(path, "wb") as out:
            out.write(data)
    else:
        path.write_bytes(data)


def line(n: int, user: Any = None, account: Any = None, ip: Any = "198.51.100.1",
         **more: Any) -> dict[str, Any]:
    return {"n": n, "time": f"2026-03-01T00:00:{n % 60:02d}Z", "remote_addr": ip, "path": "/", "status": 200,
            "user": user, "account": account, **more}


def collect(s: Store, subject: Subject, instance_dir: Path | None = None) -> tuple[Writer, Any]:
    sink = ListSink()
    result = connect(s, instance_dir).collect(subject, sink)
    return sink.only, result


# --- reading the files -----------------------------------------------------------------------


def test_the_registry_finds_the_connector_by_its_type_name() -> None:
    assert connector_class("jsonl") is JsonlConnector


def test_rotated_and_compressed_files_are_all_read_oldest_first(tmp_path: Path) -> None:
    write(tmp_path / "access.log", [line(1, MAX), line(2, "other@example.com")])
    write(tmp_path / "access.log.1", [line(3, MAX), line(4, MAX)])
    write(tmp_path / "access.log.2.gz", [line(5, "other@example.com"), line(6, MAX)])
    write(tmp_path / "access.log.10.gz", [line(7, MAX)])
    write(tmp_path / "error.log", [line(8, MAX)])  # not matched by the pattern
    (tmp_path / "access.log.d").mkdir()  # matched, but a folder: ignored

    writer, result = collect(store(tmp_path), Subject({"email": MAX}))

    assert [(r["log_file"], r["log_line"], r["n"]) for r in writer.rows] == [
        ("access.log.10.gz", 1, 7), ("access.log.2.gz", 2, 6), ("access.log.1", 1, 3), ("access.log.1", 2, 4),
        ("access.log", 1, 1)]
    assert result.found == {"requests": 5}
    assert result.notes[0].startswith("searched 4 files (7 lines)")
    assert result.notes[0].endswith("oldest first: access.log.10.gz, access.log.2.gz, access.log.1, access.log")
    assert writer.closed == 1


def test_rotation_order_is_oldest_first_for_numbered_and_dated_rotations() -> None:
    names = ["access.log", "access.log.1", "access.log.2.gz", "access.log.11.gz", "access.log-20260302.gz",
             "access.log-20260301.gz", "api.log", "api.log.1.bz2", "b/access.log", "b/access.log.1"]
    ordered = sorted(names, key=lambda n: _rotation_key(PurePosixPath(n)))
    assert ordered == ["access.log.11.gz", "access.log.2.gz", "access.log.1", "access.log-20260301.gz",
                       "access.log-20260302.gz", "access.log", "api.log.1.bz2", "api.log", "b/access.log.1",
                       "b/access.log"]


def test_the_order_is_stable_from_run_to_run(tmp_path: Path) -> None:
    for i in range(6):
        write(tmp_path / (f"access.log.{i}.gz" if i else "access.log"), [line(10 * i + k, MAX) for k in range(3)])
    first, _ = collect(store(tmp_path), Subject({"email": MAX}))
    second, _ = collect(store(tmp_path), Subject({"email": MAX}))
    assert first.rows == second.rows
    assert [r["n"] for r in first.rows] == [50, 51, 52, 40, 41, 42, 30, 31, 32, 20, 21, 22, 10, 11, 12, 0, 1, 2]


def test_only_the_subjects_lines_come_out(tmp_path: Path) -> None:
    rng = random.Random(7)
    people = [(f"person{i}@example.com", f"K{i:08d}", f"203.0.113.{i}") for i in range(1, 30)]
    records = []
    for n in range(3000):
        email, account, ip = rng.choice(people)
        logged_in = rng.random() < 0.5
        records.append(line(n, email if logged_in else None, account if rng.random() < 0.3 else None, ip))
    write(tmp_path / "access.log.1.gz", records[:1500])
    write(tmp_path / "access.log", records[1500:])
    email, account, ip = people[4]

    # computed from the records themselves, not through the connector
    by_email = [r["n"] for r in records if r["user"] == email]
    by_account = [r["n"] for r in records if r["account"] == account]
    by_ip = [r["n"] for r in records if r["remote_addr"] == ip]
    either = [r["n"] for r in records if r["user"] == email or r["account"] == account]
    assert by_email and by_account and set(by_ip) - set(either)

    cases = [({"email": email}, by_email), ({"customer_id": account}, by_account),
             ({"email": email, "customer_id": account}, either),
             ({"email": email, "customer_id": account, "ip_address": ip}, by_ip)]
    for identities, expected in cases:
        writer, result = collect(store(tmp_path), Subject(identities))
        assert [r["n"] for r in writer.rows] == expected, identities
        assert result.found == {"requests": len(expected)}


def test_the_subject_known_by_no_identity_of_the_store_is_not_searched(tmp_path: Path) -> None:
    write(tmp_path / "access.log", [line(1, MAX)])
    writer, result = collect(store(tmp_path, identities={"customer_id": {"field": "account"}}),
                             Subject({"email": MAX}))
    assert writer.rows == [] and result.found == {"requests": 0}
    assert "known by none of the identities this store is searched by (customer_id)" in result.notes[0]


def test_email_is_compared_case_insensitively_other_identities_exactly(tmp_path: Path) -> None:
    write(tmp_path / "access.log", [line(1, "Max.Mustermann@Example.COM"), line(2, " max.mustermann@example.com "),
                                    line(3, "max.mustermann@example.org"), line(4, account="k00000001"),
                                    line(5, account="K00000001"), line(6, account=1)])
    writer, _ = collect(store(tmp_path), Subject.from_email("MAX.Mustermann@example.com"))
    assert [r["n"] for r in writer.rows] == [1, 2]
    writer, _ = collect(store(tmp_path), Subject({"customer_id": "K00000001"}))
    assert [r["n"] for r in writer.rows] == [5]
    writer, _ = collect(store(tmp_path), Subject({"customer_id": "1"}))  # a number in the log, a string asked
    assert [r["n"] for r in writer.rows] == [6]


def test_ip_addresses_match_in_any_notation(tmp_path: Path) -> None:
    write(tmp_path / "access.log", [line(1, ip="2001:db8::1"), line(2, ip="2001:0DB8:0:0:0:0:0:1"),
                                    line(3, ip="2001:db8::2"), line(4, ip="::ffff:203.0.113.5"),
                                    line(5, ip="203.0.113.5"), line(6, ip="203.0.113.50"),
                                    line(7, ip=["198.51.100.9", "2001:db8::1"])])
    writer, _ = collect(store(tmp_path), Subject({"ip_address": "2001:DB8:0::1"}))
    assert [r["n"] for r in writer.rows] == [1, 2, 7]
    writer, _ = collect(store(tmp_path), Subject({"ip_address": "203.0.113.5"}))
    assert [r["n"] for r in writer.rows] == [4, 5]


def test_a_dotted_path_reaches_into_nested_objects(tmp_path: Path) -> None:
    write(tmp_path / "access.log", [
        {"n": 1, "user": {"email": MAX, "id": 7}},
        {"n": 2, "user": {"email": "someone@example.com"}},
        {"n": 3, "user": None},
        {"n": 4, "user": "max.mustermann@example.com"},  # not an object: the path does not reach
        {"n": 5, "user.email": MAX},  # a literal key with a dot is taken as it is
        {"n": 6, "user": {"emails": [MAX]}},
    ])
    writer, _ = collect(store(tmp_path, identities={"email": {"field": "user.email"}}), Subject({"email": MAX}))
    assert [r["n"] for r in writer.rows] == [1, 5]
    assert json.loads(writer.rows[0]["user"]) == {"email": MAX, "id": 7}  # nested objects are JSON text


def test_malformed_lines_are_counted_in_the_notes_and_skipped(tmp_path: Path) -> None:
    write(tmp_path / "access.log.1.gz", [line(1, MAX), '{"user": "max.mustermann@example.com", "n": ',
                                         b"\xff\xfe not utf-8", line(2, MAX)])
    write(tmp_path / "access.log", [
        line(3, MAX), "", "   ", '198.51.100.23 - - [03/Mar/2026:12:00:01 +0000] "GET / HTTP/1.1" 200 2',
        '["an", "array"]', "42", line(4, MAX)])

    writer, result = collect(store(tmp_path, prefilter=False), Subject({"email": MAX}))

    assert [r["n"] for r in writer.rows] == [1, 2, 3, 4]
    assert "2 lines in access.log.1.gz are not JSON and were skipped" in result.notes
    assert "3 lines in access.log are not JSON and were skipped" in result.notes  # blank lines are no error

    # By default only lines that hold one of the subject's values are parsed, and counted.
    writer, result = collect(store(tmp_path), Subject({"email": MAX}))
    assert [r["n"] for r in writer.rows] == [1, 2, 3, 4]
    assert ("1 line in access.log.1.gz that holds one of the subject's values is not JSON and was skipped"
            in result.notes)
    assert not any("in access.log that" in n for n in result.notes)


def test_a_line_longer_than_the_limit_is_skipped_unread(tmp_path: Path) -> None:
    huge = json.dumps(line(2, MAX, padding="x" * 5000))
    write(tmp_path / "access.log", [line(1, MAX), huge, line(3, MAX)])
    writer, result = collect(store(tmp_path, max_line_bytes=1024), Subject({"email": MAX}))
    assert [(r["n"], r["log_line"]) for r in writer.rows] == [(1, 1), (3, 3)]
    assert "1 line in access.log is too long to read and was skipped" in result.notes


def test_a_damaged_gzip_file_is_read_up_to_the_damage_and_noted(tmp_path: Path) -> None:
    write(tmp_path / "access.log.1.gz", [line(n, MAX if n % 2 else None, padding=str(n) * 40) for n in range(400)])
    data = (tmp_path / "access.log.1.gz").read_bytes()
    (tmp_path / "access.log.1.gz").write_bytes(data[: len(data) // 2])  # cut off while rotating
    write(tmp_path / "access.log", [line(1000, MAX)])

    writer, result = collect(store(tmp_path), Subject({"email": MAX}))

    numbers = [r["n"] for r in writer.rows]
    assert numbers[-1] == 1000 and 0 < len(numbers) - 1 < 200
    assert numbers[:-1] == list(range(1, 2 * len(numbers) - 2, 2))
    assert any(n.startswith("access.log.1.gz is damaged after line ") for n in result.notes)


def test_files_in_a_compression_dsr_cannot_read_are_named_not_guessed_at(tmp_path: Path) -> None:
    write(tmp_path / "access.log", [line(1, MAX)])
    (tmp_path / "access.log.1.zst").write_bytes(b"\x28\xb5\x2f\xfd")
    _writer, result = collect(store(tmp_path), Subject({"email": MAX}))
    assert "access.log.1.zst is compressed with zstd, which dsr cannot read; it was not searched" in result.notes


# --- columns and batches ---------------------------------------------------------------------


def test_rows_are_written_in_batches_to_one_table(tmp_path: Path) -> None:
    write(tmp_path / "access.log", [line(n, MAX if n % 3 == 0 else None) for n in range(21)])
    sink = ListSink()
    result = connect(store(tmp_path, batch_size=3)).collect(Subject({"email": MAX}), sink)
    writer = sink.only
    assert writer.name == "requests"
    assert [len(b) for b in writer.batches] == [3, 3, 1]
    assert result.found == {"requests": 7} and writer.closed == 1


def test_columns_come_from_the_first_batch_and_later_keys_go_to_extra(tmp_path: Path) -> None:
    write(tmp_path / "access.log", [
        {"time": "t1", "user": MAX, "status": 200},
        {"time": "t2", "user": MAX, "status": 404, "referer": "https://example.com/", "tls": {"v": "1.3"}},
        {"user": MAX, "time": "t3", "ok": True, "log_file": "theirs"},
    ])
    rule = FieldRule("session", "web_server_logs", "omit", reason={"de": "x", "en": "x"})
    writer, _ = collect(store(tmp_path, batch_size=2, fields={"session": rule}), Subject({"email": MAX}))
    assert writer.columns == ["log_file", "log_line", "time", "user", "status", "referer", "tls", "session",
                              "extra"]
    rows = writer.rows
    assert rows[1]["tls"] == '{"v": "1.3"}' and rows[0]["referer"] is None and rows[0]["extra"] is None
    # keys first seen after the first batch, and the connector's own names, are kept in extra
    assert rows[2]["log_file"] == "access.log" and json.loads(rows[2]["extra"]) == {"ok": True, "log_file": "theirs"}


def test_configured_columns_fix_the_order_and_the_rest_goes_to_extra(tmp_path: Path) -> None:
    write(tmp_path / "access.log", [line(1, MAX, agent="curl", secure=False)])
    rule = FieldRule("remote_addr", "web_server_logs", "mask", "redact", {"de": "x", "en": "x"})
    writer, _ = collect(store(tmp_path, options={"columns": ["time", "user", "status"]}, fields={"remote_addr": rule}),
                        Subject({"email": MAX}))
    assert writer.columns == ["log_file", "log_line", "time", "user", "status", "remote_addr", "extra"]
    (row,) = writer.rows
    assert row["remote_addr"] == "198.51.100.1"  # the rule is applied by the disclosing sink, not here
    assert json.loads(row["extra"]) == {"n": 1, "path": "/", "account": None, "agent": "curl", "secure": False}


def test_no_match_still_writes_the_table_with_its_columns(tmp_path: Path) -> None:
    write(tmp_path / "access.log", [line(1, "someone@example.com")])
    writer, result = collect(store(tmp_path, options={"columns": ["time", "user"]}), Subject({"email": MAX}))
    assert writer.columns == ["log_file", "log_line", "time", "user", "extra"] and writer.rows == []
    assert result.found == {"requests": 0} and writer.closed == 1


def test_booleans_stay_json_and_numbers_stay_numbers(tmp_path: Path) -> None:
    write(tmp_path / "access.log", [line(1, MAX, cached=True, ms=12.5, tags=["a", "b"])])
    writer, _ = collect(store(tmp_path), Subject({"email": MAX}))
    (row,) = writer.rows
    assert (row["cached"], row["ms"], row["status"], row["tags"]) == (True, 12.5, 200, '["a", "b"]')


# --- streaming -------------------------------------------------------------------------------


class CountingSink:
    """Keeps nothing but a count, so only the connector's own memory is measured."""

    def __init__(self) -> None:
        self.rows = 0

    def open_table(self, name: str, columns: Sequence[str], kinds: Any = None) -> CountingSink:
        return self

    def write(self, rows: Sequence[Sequence[Any]]) -> None:
        self.rows += len(rows)

    def close(self) -> None:
        pass

    def add_file(self, table: str, name: str, content: BinaryIO) -> None:  # pragma: no cover - not used
        pass


def test_a_large_file_is_streamed_not_loaded(tmp_path: Path) -> None:
    path = tmp_path / "access.log"
    template = ('{"time":"2026-03-01T00:00:00Z","remote_addr":"198.51.100.%d","method":"GET","path":"/portal/%06d",'
                '"status":200,"user_agent":"Mozilla/5.0 (X11; Linux x86_64; rv:125.0) Gecko/20100101 Firefox/125.0",'
                '"user":"%s","account":null}\n')
    with path.open("w") as out:
        for n in range(200_000):
            out.write(template % (n % 250, n, MAX if n % 1000 == 0 else f"u{n % 977}@example.com"))
    size = path.stat().st_size
    bound = 20 * 1024 * 1024
    assert size > bound  # reading the file whole would break the bound

    sink = CountingSink()
    connector = connect(store(tmp_path, batch_size=50))
    tracemalloc.start()
    try:
        result = connector.collect(Subject({"email": MAX}), sink)
        _current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert result.found == {"requests": 200} and sink.rows == 200
    assert peak < bound, f"peak {peak / 1e6:.1f} MB while reading a {size / 1e6:.1f} MB file"


# --- errors ----------------------------------------------------------------------------------


def test_a_missing_or_unreadable_folder_makes_the_store_unavailable(tmp_path: Path) -> None:
    with pytest.raises(StoreUnavailable, match="no folder"):
        connect(store(tmp_path / "missing")).collect(Subject({"email": MAX}), ListSink())
    (tmp_path / "file").write_text("")
    with pytest.raises(StoreUnavailable, match="is not a folder"):
        connect(store(tmp_path / "file")).collect(Subject({"email": MAX}), ListSink())


def test_a_log_rotated_while_it_is_read_makes_the_store_unavailable(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    write(tmp_path / "access.log.1", [line(1, MAX)])
    write(tmp_path / "access.log", [line(2, MAX)])
    connector = connect(store(tmp_path))
    listed = connector._listing()
    # logrotate runs between listing and reading: each file moves up one name
    (tmp_path / "access.log.1").rename(tmp_path / "access.log.2")
    (tmp_path / "access.log").rename(tmp_path / "access.log.1")
    write(tmp_path / "access.log", [])
    monkeypatch.setattr(connector, "_listing", lambda: listed)
    with pytest.raises(StoreUnavailable, match=r"access\.log\.1 was rotated while the logs were read"):
        connector.collect(Subject({"email": MAX}), ListSink())
    (tmp_path / "access.log.1").unlink()
    with pytest.raises(StoreUnavailable, match="rotated"):
        connector.collect(Subject({"email": MAX}), ListSink())


def test_dangling_links_are_ignored(tmp_path: Path) -> None:
    write(tmp_path / "access.log", [line(1, MAX)])
    (tmp_path / "access.log.1").symlink_to(tmp_path / "gone")
    writer, _ = collect(store(tmp_path), Subject({"email": MAX}))
    assert [r["n"] for r in writer.rows] == [1]


def test_a_relative_path_is_inside_the_instance_folder(tmp_path: Path) -> None:
    (tmp_path / "logs" / "web").mkdir(parents=True)
    write(tmp_path / "logs" / "web" / "access.log", [line(1, MAX)])
    writer, _ = collect(store("logs/web"), Subject({"email": MAX}), instance_dir=tmp_path)
    assert [r["n"] for r in writer.rows] == [1]


# --- the data map ----------------------------------------------------------------------------


def problems(s: Store) -> dict[str, str]:
    return dict(JsonlConnector.validate(s))


def test_a_valid_store_has_no_problems(tmp_path: Path) -> None:
    assert problems(store(tmp_path, options={"columns": ["time", "user"]})) == {}


def test_the_folder_is_required() -> None:
    s = store("x")
    s = Store(s.name, s.connector, s.description, {"pattern": "access.log*"}, s.identities, s.tables)
    assert problems(s) == {"stores.web_logs.connection.path": "Missing data for required field."}


def test_unknown_and_wrong_settings_are_named_by_path(tmp_path: Path) -> None:
    s = store(tmp_path, identities={"email": {"column": "user"}, "customer_id": {"field": "a..b"}},
              options={"columns": ["time", "time", "extra"], "key": "id"}, pattern="../*.log", batch_size=0,
              encoding="latin-1")
    found = problems(s)
    assert found["stores.web_logs.identities.email.column"] == "Unknown field."
    assert found["stores.web_logs.identities.email.field"] == "Missing data for required field."
    assert "dotted path" in found["stores.web_logs.identities.customer_id.field"]
    assert "added by the connector" in found["stores.web_logs.tables.requests.columns"]
    assert found["stores.web_logs.tables.requests.key"] == "Unknown field."
    assert "inside the folder" in found["stores.web_logs.connection.pattern"]
    assert "stores.web_logs.connection.batch_size" in found
    assert found["stores.web_logs.connection.encoding"] == "Unknown field."


def test_a_store_has_one_table_and_a_way_to_find_the_subject(tmp_path: Path) -> None:
    s = store(tmp_path, identities={})
    table = next(iter(s.tables.values()))
    s = Store(s.name, s.connector, s.description, s.connection, s.identities, {"a": table, "b": table})
    found = problems(s)
    assert "exactly one table" in found["stores.web_logs.tables"]
    assert "names no way to find a subject" in found["stores.web_logs.identities"]


def test_the_data_map_loader_reports_jsonl_problems_with_their_place(tmp_path: Path) -> None:
    import yaml

    from dsr.config import DEFAULT_DATAMAP
    from dsr.datamap import DataMapError, parse
    from dsr.stores import validate_store
    from tests.helpers import without_processor

    raw = without_processor(yaml.safe_load(DEFAULT_DATAMAP.read_text(encoding="utf-8")))
    raw.pop("contract")  # it names portal_db, which this map leaves out
    raw["stores"] = {"web_logs": {
        "connector": "jsonl", "description": {"de": "Protokolle", "en": "logs"},
        "connection": {"pattern": "access.log*"},
        "identities": {"email": {"field": "user", "table": "x"}},
        "tables": {"requests": {"category": "web_server_logs"}},
    }}
    with pytest.raises(DataMapError) as caught:
        parse(raw, source=Path("map.yaml"), instance_dir=tmp_path, validate_store=validate_store)
    assert caught.value.problems == [
        "map.yaml: stores.web_logs.connection.path: Missing data for required field.",
        "map.yaml: stores.web_logs.identities.email.table: Unknown field.",
    ]


# --- check -----------------------------------------------------------------------------------


def test_check_reports_a_missing_folder(tmp_path: Path) -> None:
    assert connect(store(tmp_path / "missing")).check() == [
        f"stores.web_logs.connection.path: no folder {tmp_path / 'missing'}"]


def test_check_warns_when_no_file_matches(tmp_path: Path) -> None:
    write(tmp_path / "other.log", [line(1)])
    (found,) = connect(store(tmp_path)).check()
    assert found.startswith("warning: stores.web_logs.connection.pattern: no file in")


def test_check_passes_a_good_store_and_samples_the_newest_file(tmp_path: Path) -> None:
    write(tmp_path / "access.log.1.gz", ["not json"] * 5)
    write(tmp_path / "access.log", [line(1, MAX, account="K1")])
    assert connect(store(tmp_path)).check() == []


def test_check_finds_files_that_are_not_json_lines_and_fields_that_are_never_there(tmp_path: Path) -> None:
    write(tmp_path / "access.log", ['198.51.100.23 - - [03/Mar/2026:12:00:01 +0000] "GET / HTTP/1.1" 200 2'] * 3)
    (found,) = connect(store(tmp_path)).check()
    assert found.startswith("stores.web_logs.connection.path: none of the first 3 lines of access.log")

    write(tmp_path / "access.log", [{"remote_addr": "198.51.100.1", "user": None}, "oops"])
    rule = FieldRule("referer", "web_server_logs")
    warnings = connect(store(tmp_path, fields={"referer": rule})).check()
    assert warnings == [
        "warning: stores.web_logs.connection.path: 1 of the first 2 lines of access.log are not JSON objects "
        "(they are skipped when collecting)",
        "warning: stores.web_logs.identities.customer_id.field: none of the first 2 lines of access.log has "
        "'account'",
        "warning: stores.web_logs.tables.requests.fields.referer: none of the first 2 lines of access.log has "
        "'referer'",
    ]


# --- the demo logs ---------------------------------------------------------------------------


def _read(path: Path) -> list[bytes]:
    data = path.read_bytes()
    return [raw + b"\n" for raw in (gzip.decompress(data) if path.suffix == ".gz" else data).split(b"\n")[:-1]]


def _objects(path: Path) -> list[dict[str, Any]]:
    out = []
    for raw in _read(path):
        try:
            out.append(json.loads(raw))
        except ValueError:
            continue
    return out


def test_the_demo_logs_are_deterministic_and_have_max_in_every_file(tmp_path: Path) -> None:
    counts = logs.build(tmp_path / "a", lines=300)
    logs.build(tmp_path / "b", lines=300)
    assert set(counts) == {"web/access.log.2.gz", "web/access.log.1", "web/access.log",
                           "api/api.log.2.gz", "api/api.log.1", "api/api.log"}
    for name, count in counts.items():
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
        assert len(_read(tmp_path / "a" / name)) == count, name
        records = _objects(tmp_path / "a" / name)
        assert any(r.get("account") == "K00000001" for r in records), name
        if name.startswith("web/"):
            assert any(str(r.get("user")).lower() == MAX for r in records), name
            assert all(r["remote_addr"].startswith(("198.51.100.", "203.0.113.")) for r in records)
    malformed = {name: count - len(_objects(tmp_path / "a" / name)) for name, count in counts.items()}
    assert malformed == {name: 3 if name == "web/access.log.1" else 0 for name in counts}
    assert logs.default_subjects(3)[0] == {"email": MAX, "customer_number": "K00000001"}


def test_the_connector_finds_exactly_max_in_the_demo_logs(tmp_path: Path) -> None:
    logs.build(tmp_path, lines=600, seed=3)
    expected = []
    for name in ("access.log.2.gz", "access.log.1", "access.log"):
        for n, raw in enumerate(_read(tmp_path / "web" / name), start=1):
            try:
                record = json.loads(raw)
            except ValueError:
                continue
            if str(record["user"]).lower() == MAX or record["account"] == "K00000001":
                expected.append((name, n))
    writer, result = collect(store(tmp_path / "web"), Subject({"email": MAX, "customer_id": "K00000001"}))
    assert [(r["log_file"], r["log_line"]) for r in writer.rows] == expected
    assert len(expected) == 12
    assert not any("not JSON" in n for n in result.notes)  # none of the broken lines names Max
    _writer, everything = collect(store(tmp_path / "web", prefilter=False), Subject({"email": MAX}))
    assert "3 lines in access.log.1 are not JSON and were skipped" in everything.notes

    expected = [(name, n) for name in ("api.log.2.gz", "api.log.1", "api.log")
                for n, raw in enumerate(_read(tmp_path / "api" / name), start=1)
                if json.loads(raw)["account"] == "K00000001"]
    api, _ = collect(store(tmp_path / "api", pattern="api.log*"), Subject({"customer_id": "K00000001"}))
    assert [(r["log_file"], r["log_line"]) for r in api.rows] == expected
    assert len(expected) >= 12 and {r["client"] for r in api.rows} <= {
        json.dumps({"sdk": sdk, "version": version}) for sdk, version in logs.SDKS}


# --- linked lines (analytics visitor IDs) ------------------------------------------------------


def _event(n: int, visitor: str | None, account: str | None = None, **more: Any) -> dict[str, Any]:
    return {"n": n, "time": f"2026-03-01T00:00:{n % 60:02d}Z", "visitor_id": visitor, "account": account,
            "event": "page_view", **more}


def _analytics(folder: Path) -> Store:
    return store(folder, pattern="events-*.jsonl*", identities={"customer_id": {"field": "account"}},
                 link_fields=["visitor_id"])


def test_lines_before_a_login_are_found_through_the_visitor_id_seen_after_it(tmp_path: Path) -> None:
    write(tmp_path / "events-2026-03-01.jsonl.gz", [
        _event(1, "v-max-laptop"),                       # before his login: linked
        _event(2, "v-max-laptop", "K00000001"),          # logged in: his
        _event(3, "v-anna", "K00000002"),                # someone else
        _event(4, "v-anna"),                             # someone else's, before her login
        _event(5, "v-stranger"),                         # nobody we know
    ])
    write(tmp_path / "events-2026-03-02.jsonl", [
        _event(6, "v-max-phone"),                        # linked by a later file's login
        _event(7, "v-max-laptop"),
        _event(8, "v-max-phone", "K00000001"),
        _event(9, None),                                 # no visitor id at all
    ])
    writer, result = collect(_analytics(tmp_path), Subject({"customer_id": "K00000001"}))
    assert [r["n"] for r in writer.rows] == [1, 2, 6, 7, 8]
    assert result.found == {"requests": 5}
    assert "3 lines without a login found through visitor_id: 2 values seen on the subject's own lines" in result.notes


def test_a_visitor_id_seen_with_someone_else_is_not_followed(tmp_path: Path) -> None:
    """A shared office browser: its anonymous lines could be either person's, so they are neither's."""
    write(tmp_path / "events-2026-03-01.jsonl", [
        _event(1, "v-office"),
        _event(2, "v-office", "K00000001"),
        _event(3, "v-office", "K00000002"),
        _event(4, "v-max-phone"),
        _event(5, "v-max-phone", "K00000001"),
    ])
    writer, result = collect(_analytics(tmp_path), Subject({"customer_id": "K00000001"}))
    assert [r["n"] for r in writer.rows] == [2, 4, 5]  # never line 3 (Anna's) nor 1 (could be hers)
    assert any("1 value of visitor_id also seen with someone else" in n for n in result.notes)


def test_without_link_fields_only_lines_with_an_identity_match(tmp_path: Path) -> None:
    write(tmp_path / "events-2026-03-01.jsonl", [_event(1, "v-1"), _event(2, "v-1", "K00000001")])
    s = store(tmp_path, pattern="events-*.jsonl*", identities={"customer_id": {"field": "account"}})
    writer, result = collect(s, Subject({"customer_id": "K00000001"}))
    assert [r["n"] for r in writer.rows] == [2]
    assert not any("without a login" in n for n in result.notes)


def test_link_fields_must_be_keys_or_dotted_paths(tmp_path: Path) -> None:
    problems = JsonlConnector.validate(store(tmp_path, link_fields=["visitor id"]))
    assert any("link_fields" in where for where, _ in problems)


def test_check_warns_when_no_line_has_a_link_field(tmp_path: Path) -> None:
    write(tmp_path / "events-2026-03-01.jsonl", [_event(1, "v-1", "K00000001")])
    s = store(tmp_path, pattern="events-*.jsonl*", identities={"customer_id": {"field": "account"}},
              link_fields=["cookie_id"])
    assert any("link_fields: none of the first 1 line" in p and "'cookie_id'" in p for p in connect(s).check())


@pytest.mark.parametrize("visitor", ["v-office", "v-büro\"1"])  # the second is written escaped in JSON
def test_a_shared_visitor_id_is_found_wherever_the_other_login_stands(tmp_path: Path, visitor: str) -> None:
    """The other customer's login comes first, in an older file: still not followed. A value that
    JSON writes escaped (non-ASCII, a quote) is searched in parsed lines, not as raw bytes."""
    write(tmp_path / "events-2026-03-01.jsonl.gz", [_event(1, visitor, "K00000002"), _event(2, "v-x", "K00000003")])
    write(tmp_path / "events-2026-03-02.jsonl", [_event(3, visitor), _event(4, visitor, "K00000001"),
                                                   _event(5, "v-max"), _event(6, "v-max", "K00000001")])
    writer, result = collect(_analytics(tmp_path), Subject({"customer_id": "K00000001"}))
    assert [r["n"] for r in writer.rows] == [4, 5, 6]
    assert any("1 value of visitor_id also seen with someone else" in n for n in result.notes)


def test_parsing_only_lines_that_hold_a_value_finds_exactly_what_parsing_every_line_finds(tmp_path: Path) -> None:
    """The prefilter searches lower-cased raw lines for the subject's values; identities whose forms
    vary (an IPv6 address) or that a writer may escape switch it off. Same rows either way."""
    rows = [
        line(1, "MAX.Mustermann@EXAMPLE.com"), line(2, None, "K00000001"), line(3, None, None, "2001:db8::1"),
        line(4, None, None, "2001:0db8:0:0::1"), line(5, None, None, "::ffff:203.0.113.10"),
        line(6, None, None, "203.0.113.10"), line(7, None, 1), line(8, ["x@example.com", MAX]),
        {"n": 9, "session": {"user": {"email": MAX}}}, line(10, "o'brien@example.com"),
        line(11, "max.mustermann@example.co"), line(12, None, "K000000011"), line(13, None, None, "203.0.113.100"),
    ]
    write(tmp_path / "access.log", rows)
    ids = {"email": {"field": "user"}, "customer_id": {"field": "account"}, "ip_address": {"field": "remote_addr"},
           "nested": {"field": "session.user.email"}}
    subjects = [Subject({"email": MAX}), Subject({"customer_id": "K00000001"}), Subject({"ip_address": "203.0.113.10"}),
                Subject({"ip_address": "2001:db8::1"}), Subject({"customer_id": "1"}), Subject({"nested": MAX}),
                Subject({"email": "o'brien@example.com"})]
    for subject in subjects:
        found = {p: [r["n"] for r in collect(store(tmp_path, identities=ids, prefilter=p), subject)[0].rows]
                 for p in (True, False)}
        assert found[True] == found[False] and found[True], (subject, found)


def test_the_json_twin_keeps_the_lines_json_types(tmp_path: Path) -> None:
    """Numbers, booleans, null and nested objects stay so in the package's JSON (Art. 20); a field
    whose lines hold different types is text there, so no value gets a type it did not have."""
    from dsr.exports.csv_files import CsvDirectorySink
    from dsr.exports.json_files import add_json, records

    write(tmp_path / "access.log", [line(1, MAX, cached=True, ms=12.5, tags=["a", "b"], code="7", mixed=1),
                                    line(2, MAX, cached=False, ms=3, code="08", mixed="x", geo={"cc": "DE"})])
    out = tmp_path / "out"
    connect(store(tmp_path)).collect(Subject({"email": MAX}), CsvDirectorySink(out))
    add_json(out)
    first, second = records(json.loads((out / "requests.json").read_text(encoding="utf-8")))
    assert (first["log_line"], first["status"], first["cached"], first["ms"], first["tags"]) == (1, 200, True, 12.5,
                                                                                               ["a", "b"])
    assert (second["cached"], second["ms"], second["account"]) == (False, 3, None)
    assert (first["code"], second["code"]) == ("7", "08")  # text stays text, though it looks like a number
    assert (first["mixed"], second["mixed"]) == ("1", "x")
    assert (first["geo"], second["geo"]) == (None, {"cc": "DE"})  # an object, not its JSON text
