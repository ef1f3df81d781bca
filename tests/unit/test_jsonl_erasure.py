"""Erasure (Art. 17) in the jsonl connector: the subject's lines removed (or nulled, or kept and
counted) by rewriting each affected file atomically, every other byte as it was."""

from __future__ import annotations

import bz2
import gzip
import json
import lzma
import multiprocessing
import os
import re
import signal
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from dsr.config import DEFAULT_DATAMAP
from dsr.datamap import load
from dsr.datamap.model import Store, Table
from dsr.demo import analytics, logs
from dsr.stores import ConnectorContext, StoreUnavailable, Subject, validate_store
from dsr.stores.base import ErasureCount, TableErasure, TooMany
from dsr.stores.jsonl import TEMP_PREFIX, JsonlConnector

MAX = "max.mustermann@example.com"
MAX_ID = "K00000001"
MAX_SUBJECT = Subject({"email": MAX, "customer_id": MAX_ID})
DELETE = TableErasure("delete")
NOW = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)


# --- helpers ---------------------------------------------------------------------------------


class Rows:
    """A sink that keeps only where each collected line came from."""

    def __init__(self) -> None:
        self.where: list[tuple[str, int]] = []

    def open_table(self, name: str, columns: Sequence[str], kinds: Any = None) -> Rows:
        self._columns = list(columns)
        return self

    def write(self, rows: Sequence[Sequence[Any]]) -> None:
        self.where += [(r[0], r[1]) for r in rows]

    def close(self) -> None:
        pass

    def add_file(self, table: str, name: str, content: Any) -> None:  # pragma: no cover - not used
        raise AssertionError


def default_store(instance: Path, name: str) -> Store:
    """A store of the shipped data map, its folder inside ``instance``."""
    m = load(DEFAULT_DATAMAP, instance_dir=instance, environ={}, validate_store=validate_store)
    return m.stores[name]


def hand_store(folder: Path, pattern: str = "access.log*", **connection: Any) -> Store:
    identities = {"email": {"field": "user"}, "customer_id": {"field": "account"}}
    return Store("web_logs", "jsonl", {"de": "Protokolle", "en": "logs"},
                 {"path": str(folder), "pattern": pattern, **connection}, identities,
                 {"requests": Table("requests", "web_server_logs", {}, {})})


def connect(store: Store, instance: Path) -> JsonlConnector:
    return JsonlConnector(store, ConnectorContext(instance))


def collected(connector: JsonlConnector, subject: Subject = MAX_SUBJECT) -> list[tuple[str, int]]:
    sink = Rows()
    connector.collect(subject, sink)
    return sink.where


def raw_lines(data: bytes) -> list[bytes]:
    """Lines as the connector numbers them: split after each \\n only, endings kept."""
    return [piece for piece in re.split(b"(?<=\n)", data) if piece]


def content(path: Path) -> bytes:
    data = path.read_bytes()
    if path.suffix == ".gz":
        return gzip.decompress(data)
    if path.suffix == ".bz2":
        return bz2.decompress(data)
    if path.suffix == ".xz":
        return lzma.decompress(data)
    return data


def state(folder: Path) -> dict[str, tuple[bytes, int, int, int]]:
    """Every file under the folder: bytes, mtime, inode, mode."""
    out = {}
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            info = path.stat()
            out[path.relative_to(folder).as_posix()] = (path.read_bytes(), info.st_mtime_ns, info.st_ino, info.st_mode)
    return out


def without(folder: Path, where: Sequence[tuple[str, int]]) -> dict[str, bytes]:
    """Each file's decompressed content minus the listed lines (file relative to ``folder``, 1-based)."""
    drop: dict[str, set[int]] = {}
    for name, number in where:
        drop.setdefault(name, set()).add(number)
    return {path.relative_to(folder).as_posix(): b"".join(
        line for n, line in enumerate(raw_lines(content(path)), start=1)
        if n not in drop.get(path.relative_to(folder).as_posix(), set()))
        for path in sorted(folder.iterdir()) if path.is_file()}


def record(n: int, user: Any = None, account: Any = None, **more: Any) -> dict[str, Any]:
    return {"n": n, "time": f"2026-03-01T00:00:{n % 60:02d}Z", "remote_addr": "198.51.100.1", "user": user,
            "account": account, **more}


def write(path: Path, lines: Sequence[dict[str, Any] | bytes], ending: bytes = b"\n") -> None:
    data = b"".join((x if isinstance(x, bytes) else json.dumps(x).encode() + ending) for x in lines)
    opener: Any = {".gz": gzip.compress, ".bz2": bz2.compress, ".xz": lzma.compress}.get(path.suffix)
    path.write_bytes(opener(data) if opener else data)


def age(path: Path, days: int = 3) -> None:
    """Set a file's times into the past, so an unchanged mtime is told from a rewrite's."""
    when = (NOW - timedelta(days=days)).timestamp()
    os.utime(path, (when, when))


def totals(count: ErasureCount) -> tuple[int, int, int, int]:
    return count.found, count.deleted, count.changed, count.retained


@pytest.fixture
def web(tmp_path: Path) -> tuple[Path, JsonlConnector]:
    """The demo web logs in the default map's folder, with three more rotations written by hand:
    one without Max (gzip), one bz2 with CRLF endings, a line that is not JSON and no final newline,
    one xz."""
    logs.build(tmp_path / "logs", lines=600, seed=3)
    folder = tmp_path / "logs" / "web"
    other = [record(n, f"user{n}@example.com", f"K{n:08d}") for n in range(100, 110)]
    write(folder / "access.log.3.gz", other)
    write(folder / "access.log.4.bz2", [record(1, "Max.Mustermann@Example.com"), other[0], record(2, None, MAX_ID),
                                        b"not json at all\r\n", *other[1:3]], ending=b"\r\n")
    (folder / "access.log.4.bz2").write_bytes(bz2.compress(content(folder / "access.log.4.bz2").rstrip(b"\r\n")))
    write(folder / "access.log.5.xz", [*other[3:6], record(3, MAX)])
    for path in folder.iterdir():
        age(path)
    (folder / "access.log.1").chmod(0o640)
    return folder, connect(default_store(tmp_path, "web_logs"), tmp_path)


# --- the demo web logs -----------------------------------------------------------------------


def test_erasing_max_removes_exactly_his_lines_and_leaves_every_other_byte(web: tuple[Path, JsonlConnector]) -> None:
    folder, connector = web
    his = collected(connector)
    assert len(his) > 12 and {name for name, _ in his} == {
        "access.log", "access.log.1", "access.log.2.gz", "access.log.4.bz2", "access.log.5.xz"}
    expected = without(folder, his)
    before = state(folder)

    preview = connector.preview(MAX_SUBJECT, {"requests": DELETE})
    assert state(folder) == before  # a preview changes nothing
    result = connector.erase(MAX_SUBJECT, {"requests": DELETE})

    assert totals(result.tables["requests"]) == (len(his), len(his), 0, 0)
    assert preview.tables == result.tables and result.touched == len(his)
    assert collected(connector) == []
    assert without(folder, []) == expected  # the rest byte for byte: malformed lines, CRLF, no final newline
    assert b"not json at all\r\n" in content(folder / "access.log.4.bz2")
    assert content(folder / "access.log.4.bz2").endswith(b'"K00000102"}')  # still no final newline
    after = state(folder)
    assert set(after) == set(before)  # no temporary file left
    for name, (data, mtime, _inode, mode) in after.items():
        assert mode == before[name][3], name  # permissions kept (access.log.1 is 0640)
        assert mtime == before[name][1], name  # times kept: a retention by age still sees the old file
        if name.endswith(".gz"):
            assert data[:2] == b"\x1f\x8b", name
        elif name.endswith(".bz2"):
            assert data[:3] == b"BZh", name
        elif name.endswith(".xz"):
            assert data[:6] == b"\xfd7zXZ\x00", name
        else:
            assert json.loads(raw_lines(data)[0]), name  # plain stays plain
    assert after["access.log.3.gz"] == before["access.log.3.gz"]  # no line of his: not rewritten (same inode)
    header = after["access.log.2.gz"][0]
    assert header[3] & 0x08 and header[10:23] == b"access.log.2\x00"  # named as gzip names it, not the temporary
    assert any("rewritten" in n and "access.log.2.gz" in n for n in result.notes)
    assert any(n.startswith("access.log is the live log") for n in result.notes)


def test_a_second_erasure_finds_nothing_and_rewrites_nothing(web: tuple[Path, JsonlConnector]) -> None:
    folder, connector = web
    connector.erase(MAX_SUBJECT, {"requests": DELETE})
    before = state(folder)
    again = connector.erase(MAX_SUBJECT, {"requests": DELETE})
    assert totals(again.tables["requests"]) == (0, 0, 0, 0)
    assert state(folder) == before


def test_the_bound_stops_the_erasure_before_anything_changes(web: tuple[Path, JsonlConnector]) -> None:
    folder, connector = web
    found = connector.preview(MAX_SUBJECT, {"requests": DELETE}).tables["requests"].found
    before = state(folder)
    with pytest.raises(TooMany) as raised:
        connector.erase(MAX_SUBJECT, {"requests": DELETE}, bound=found - 1)
    assert (raised.value.touched, raised.value.bound, raised.value.store) == (found, found - 1, "web_logs")
    assert state(folder) == before
    assert connector.erase(MAX_SUBJECT, {"requests": DELETE}, bound=found).touched == found


def test_retain_changes_nothing_and_counts_his_lines(web: tuple[Path, JsonlConnector]) -> None:
    """The map keeps web log lines until the logs' own 7-day retention deletes them."""
    folder, connector = web
    assert connector.store.tables["requests"].erasure is not None
    assert connector.store.tables["requests"].erasure.method == "retain"
    his = collected(connector)
    before = state(folder)
    result = connector.erase(MAX_SUBJECT, {"requests": TableErasure("retain")})
    assert totals(result.tables["requests"]) == (len(his), 0, 0, len(his))
    assert state(folder) == before
    assert connector.preview(MAX_SUBJECT, {"requests": TableErasure("retain")}).tables == result.tables


def test_other_subjects_lines_are_never_touched(web: tuple[Path, JsonlConnector], tmp_path: Path) -> None:
    _folder, connector = web
    others = [Subject({"email": s["email"], "customer_id": s["customer_number"]})
              for s in logs.default_subjects(6)[1:]]
    counts = [len(collected(connector, s)) for s in others]
    assert sum(counts) > 0
    connector.erase(MAX_SUBJECT, {"requests": DELETE})
    assert [len(collected(connector, s)) for s in others] == counts


def test_a_plan_without_the_table_does_nothing_and_an_unknown_table_is_refused(
        web: tuple[Path, JsonlConnector]) -> None:
    folder, connector = web
    before = state(folder)
    assert connector.erase(MAX_SUBJECT, {}).tables == {}
    with pytest.raises(ValueError, match="no table calls"):
        connector.erase(MAX_SUBJECT, {"calls": DELETE})
    assert state(folder) == before


# --- analytics: linked pseudonymous events -----------------------------------------------------


def _analytics(tmp_path: Path) -> tuple[Path, JsonlConnector]:
    folder = tmp_path / "analytics"
    windows = [analytics.ConsentWindow(f"K{n:08d}", NOW - timedelta(days=12), None) for n in (1, 2, 3, 4)]
    analytics.build(folder, windows, now=NOW)
    for path in folder.iterdir():
        age(path)
    return folder, connect(default_store(tmp_path, "analytics"), tmp_path)


def test_his_pseudonymous_events_before_a_login_are_erased_too(tmp_path: Path) -> None:
    folder, connector = _analytics(tmp_path)
    events = {path.name: [json.loads(x) for x in raw_lines(content(path))] for path in folder.iterdir()}
    own = {e["visitor_id"] for es in events.values() for e in es if e["account"] == MAX_ID}
    foreign = {e["visitor_id"] for es in events.values() for e in es if e["account"] not in (None, MAX_ID)}
    linked = [(name, n) for name, es in events.items() for n, e in enumerate(es, start=1)
              if e["account"] is None and e["visitor_id"] in own - foreign]
    assert len(own) == 2 and linked
    subject = Subject({"customer_id": MAX_ID})
    his = collected(connector, subject)
    assert set(linked) < set(his)
    expected = without(folder, his)

    result = connector.erase(subject, {"events": DELETE})

    assert totals(result.tables["events"]) == (len(his), len(his), 0, 0)
    assert collected(connector, subject) == []
    assert without(folder, []) == expected
    rest = [json.loads(x) for path in folder.iterdir() for x in raw_lines(content(path))]
    assert not any(e["visitor_id"] in own for e in rest)  # neither logged in nor before the login
    assert any(e["account"] is None and e["visitor_id"] in foreign for e in rest)  # the shared browser stays
    assert totals(connector.erase(subject, {"events": DELETE}).tables["events"]) == (0, 0, 0, 0)


# --- null ------------------------------------------------------------------------------------


def test_null_sets_the_fields_on_his_lines_only(tmp_path: Path) -> None:
    lines: list[dict[str, Any] | bytes] = [record(1, MAX, path="/a"), record(2, "anna@example.com", path="/b"),
             b'{"n":3,"user":"max.mustermann@example.com","path":"/c","geo":{"ip":"203.0.113.10","cc":"DE"}}\n',
             b'{"n": 4, "user": "MAX.MUSTERMANN@EXAMPLE.COM", "path": "/\\u00e4"}\r\n', b"garbage\n"]
    write(tmp_path / "access.log", lines)
    connector = connect(hand_store(tmp_path), tmp_path)
    subject = Subject({"email": MAX})
    plan = {"requests": TableErasure("null", ("path", "geo.ip", "missing"), {"geo.ip": "0.0.0.0"})}  # noqa: S104 - an address, no binding

    preview = connector.preview(subject, plan)
    result = connector.erase(subject, plan)

    assert totals(result.tables["requests"]) == (3, 0, 3, 0) == totals(preview.tables["requests"])
    out = raw_lines((tmp_path / "access.log").read_bytes())
    assert out[1] == json.dumps(lines[1]).encode() + b"\n" and out[4] == b"garbage\n"
    assert json.loads(out[0]) == {**record(1, MAX), "path": None}
    # a changed line keeps the style of the line it replaces: compact, escaped, its line ending
    assert out[2] == b'{"n":3,"user":"max.mustermann@example.com","path":null,"geo":{"ip":"0.0.0.0","cc":"DE"}}\n'
    assert out[3] == b'{"n": 4, "user": "MAX.MUSTERMANN@EXAMPLE.COM", "path": null}\r\n'
    before = state(tmp_path)
    again = connector.erase(subject, plan)  # his lines are still his, but nothing is left to change
    assert totals(again.tables["requests"]) == (3, 0, 0, 0)
    assert state(tmp_path) == before


# --- concurrency, crashes, odd files ---------------------------------------------------------


def test_lines_appended_to_the_live_log_during_the_rewrite_are_kept_or_erased(tmp_path: Path) -> None:
    write(tmp_path / "access.log", [record(1, MAX), record(2, "anna@example.com")])
    connector = connect(hand_store(tmp_path), tmp_path)
    appended = [json.dumps(record(3, "bob@example.com")).encode() + b"\n",
                json.dumps(record(4, MAX)).encode() + b"\n"]
    calls: list[Path] = []

    def append(path: Path) -> None:
        calls.append(path)
        if len(calls) == 1:  # the logging web server writes on while dsr rewrites
            with path.open("ab") as out:
                out.write(b"".join(appended))

    connector.before_replace = append
    result = connector.erase(Subject({"email": MAX}), {"requests": DELETE})
    assert len(calls) == 2  # the appended tail was read and filtered, then the file was stable
    assert (tmp_path / "access.log").read_bytes() == json.dumps(record(2, "anna@example.com")).encode() + b"\n" + \
        appended[0]
    assert totals(result.tables["requests"]) == (2, 2, 0, 0)


def test_a_log_rotated_during_the_rewrite_is_left_alone_and_the_retry_finishes(tmp_path: Path) -> None:
    write(tmp_path / "access.log", [record(1, MAX), record(2, "anna@example.com")])
    connector = connect(hand_store(tmp_path), tmp_path)

    def rotate(path: Path) -> None:
        path.rename(path.with_name("access.log.1"))
        write(path, [record(3, MAX)])
        connector.before_replace = None

    connector.before_replace = rotate
    with pytest.raises(StoreUnavailable, match="changed while it was erased"):
        connector.erase(Subject({"email": MAX}), {"requests": DELETE})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["access.log", "access.log.1"]  # no temporary left
    assert len(raw_lines((tmp_path / "access.log.1").read_bytes())) == 2  # untouched
    result = connector.erase(Subject({"email": MAX}), {"requests": DELETE})
    assert totals(result.tables["requests"]) == (2, 2, 0, 0)
    assert collected(connector, Subject({"email": MAX})) == []


def _kill_during_second_rewrite(folder: Path) -> None:  # pragma: no cover - runs in the child
    connector = connect(hand_store(folder, pattern="events-*", link_fields=["visitor"]), folder)
    seen: list[Path] = []

    def die(path: Path) -> None:
        seen.append(path)
        if len(seen) == 2:
            os.kill(os.getpid(), signal.SIGKILL)

    connector.before_replace = die
    connector.erase(Subject({"customer_id": MAX_ID}), {"requests": DELETE})


def test_a_worker_killed_mid_erasure_leaves_each_file_old_or_new_and_the_rerun_finishes(tmp_path: Path) -> None:
    """Killed in the first round (his events before a login): one file is new, the other old. The
    rerun still finds the rest through his logged-in events, which the first round keeps."""
    first = [record(1, None, None, visitor="v-max"), record(2, None, MAX_ID, visitor="v-max"),
             record(3, None, "K00000002", visitor="v-anna")]
    second = [record(4, None, None, visitor="v-max"), record(5, None, None, visitor="v-anna")]
    write(tmp_path / "events-1.gz", first)
    write(tmp_path / "events-2", second)
    old = state(tmp_path)
    child = multiprocessing.get_context("fork").Process(target=_kill_during_second_rewrite, args=(tmp_path,))
    child.start()
    child.join(30)
    assert child.exitcode == -signal.SIGKILL
    assert content(tmp_path / "events-1.gz") == b"".join(json.dumps(r).encode() + b"\n" for r in first[1:])
    assert (tmp_path / "events-2").read_bytes() == old["events-2"][0]  # old, not half-written
    temps = [p for p in tmp_path.iterdir() if p.name.startswith(TEMP_PREFIX)]
    assert len(temps) == 1  # SIGKILL leaves the temporary file; collect never reads it

    connector = connect(hand_store(tmp_path, pattern="*", link_fields=["visitor"]), tmp_path)
    subject = Subject({"customer_id": MAX_ID})
    assert len(collected(connector, subject)) == 2  # events 2 and 4, not the temporary file's copy
    stale = (NOW - timedelta(days=1)).timestamp()
    os.utime(temps[0], (stale, stale))
    rerun = connector.erase(subject, {"requests": DELETE})
    assert totals(rerun.tables["requests"]) == (2, 2, 0, 0)
    assert collected(connector, subject) == []
    assert (tmp_path / "events-2").read_bytes() == json.dumps(second[1]).encode() + b"\n"
    # the temporary file is recent by its ctime (utime cannot set that): kept, in case a rewrite is running
    assert temps[0].exists()


def test_stale_temporary_files_are_swept(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write(tmp_path / "access.log", [record(1, "anna@example.com")])
    (tmp_path / f"{TEMP_PREFIX}abc.tmp").write_bytes(b"a copy of other people's lines\n")
    connector = connect(hand_store(tmp_path), tmp_path)
    monkeypatch.setattr("dsr.stores.jsonl.STALE_TEMP_SECONDS", -1)  # every temporary file counts as stale
    result = connector.erase(Subject({"email": MAX}), {"requests": DELETE})
    assert not (tmp_path / f"{TEMP_PREFIX}abc.tmp").exists()
    assert "removed 1 temporary file left by an erasure that was interrupted" in result.notes


def test_a_line_too_long_to_read_is_copied_unread(tmp_path: Path) -> None:
    long = json.dumps(record(1, "anna@example.com", blob="x" * 5000)).encode() + b"\n"
    write(tmp_path / "access.log", [long, record(2, MAX), long])
    connector = connect(hand_store(tmp_path, max_line_bytes=1024), tmp_path)
    result = connector.erase(Subject({"email": MAX}), {"requests": DELETE})
    assert result.touched == 1 and (tmp_path / "access.log").read_bytes() == long + long


def test_a_damaged_or_unreadable_file_is_never_rewritten_and_is_named(tmp_path: Path) -> None:
    data = gzip.compress(b"".join(json.dumps(record(n, MAX)).encode() + b"\n" for n in range(200)))
    (tmp_path / "access.log.1.gz").write_bytes(data[: len(data) // 2])  # truncated while rotating
    (tmp_path / "access.log.2.zst").write_bytes(b"\x28\xb5\x2f\xfd")
    write(tmp_path / "access.log", [record(500, MAX)])
    connector = connect(hand_store(tmp_path), tmp_path)
    before = state(tmp_path)
    preview = connector.preview(Subject({"email": MAX}), {"requests": DELETE})
    result = connector.erase(Subject({"email": MAX}), {"requests": DELETE})
    count = result.tables["requests"]
    assert preview.tables == result.tables and count.deleted == 1 and count.found > 1
    after = state(tmp_path)
    assert after["access.log.1.gz"] == before["access.log.1.gz"] and after["access.log.2.zst"] == before[
        "access.log.2.zst"]
    assert any(n.startswith("access.log.1.gz is damaged") and "a person must" in n for n in result.notes)
    assert any(n.startswith("access.log.2.zst is compressed with zstd") for n in result.notes)


def test_a_symlinked_log_has_its_target_rewritten(tmp_path: Path) -> None:
    (tmp_path / "real").mkdir()
    write(tmp_path / "real" / "access.log", [record(1, MAX), record(2, "anna@example.com")])
    (tmp_path / "logs").mkdir()
    (tmp_path / "logs" / "access.log").symlink_to(tmp_path / "real" / "access.log")
    connector = connect(hand_store(tmp_path / "logs"), tmp_path)
    assert connector.erase(Subject({"email": MAX}), {"requests": DELETE}).touched == 1
    assert (tmp_path / "logs" / "access.log").is_symlink()
    assert len(raw_lines((tmp_path / "real" / "access.log").read_bytes())) == 1


@pytest.mark.parametrize("plan", [{"requests": DELETE}, {"requests": TableErasure("null", ("user",))}])
def test_preview_counts_equal_the_erasures(tmp_path: Path, plan: Mapping[str, TableErasure]) -> None:
    write(tmp_path / "access.log.1.gz", [record(1, MAX), record(2, "x@example.com"), record(3, None, MAX_ID)])
    write(tmp_path / "access.log", [record(4, "MAX.MUSTERMANN@example.com"), record(5, None)])
    connector = connect(hand_store(tmp_path), tmp_path)
    before = state(tmp_path)
    preview = connector.preview(MAX_SUBJECT, plan)
    assert state(tmp_path) == before
    assert connector.erase(MAX_SUBJECT, plan).tables == preview.tables


def test_a_large_file_is_rewritten_streaming_not_loaded(tmp_path: Path) -> None:
    import tracemalloc

    path = tmp_path / "access.log"
    template = ('{"time":"2026-03-01T00:00:00Z","remote_addr":"198.51.100.%d","method":"GET","path":"/portal/%06d",'
                '"status":200,"user_agent":"Mozilla/5.0 (X11; Linux x86_64; rv:125.0) Gecko/20100101 Firefox/125.0",'
                '"user":"%s","account":null}\n')
    with path.open("w") as out:
        for n in range(200_000):
            out.write(template % (n % 250, n, MAX if n % 1000 == 0 else f"u{n % 977}@example.com"))
    size = path.stat().st_size
    bound = 20 * 1024 * 1024
    assert size > bound  # holding the file whole would break the bound
    connector = connect(hand_store(tmp_path), tmp_path)
    tracemalloc.start()
    try:
        result = connector.erase(Subject({"email": MAX}), {"requests": DELETE})
        _current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert totals(result.tables["requests"]) == (200, 200, 0, 0)
    assert peak < bound, f"peak {peak / 1e6:.1f} MB while rewriting a {size / 1e6:.1f} MB file"
    assert path.stat().st_size == size - sum(len(template % (n % 250, n, MAX)) for n in range(0, 200_000, 1000))
