"""The report: a table on the terminal, a dated section appended to ``bench/RESULTS.md``, and the
same figures in ``bench/results.json`` (machine-readable: the previous ratios come from there)."""

from __future__ import annotations

import json
import os
import platform
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
RESULTS_MD = HERE / "RESULTS.md"
RESULTS_JSON = HERE / "results.json"
REGRESSION = 1.20  # a ratio more than 20% worse than the last recorded one is reported
NOISY_FLOOR = 0.05  # seconds: below this a ratio swings with the machine's load; said so, still reported


@dataclass(frozen=True)
class Row:
    case: str
    size: int
    rows: int
    floor_s: float
    dsr_s: float
    rss_mb: float
    floor_rss_mb: float
    runs: int
    pages: int | None = None  # of the PDF a case rendered

    @property
    def ratio(self) -> float:
        return self.dsr_s / self.floor_s if self.floor_s > 0 else float("inf")

    @property
    def rows_per_s(self) -> float:
        return self.rows / self.dsr_s if self.dsr_s > 0 else 0.0


@dataclass(frozen=True)
class LoadRow:
    """One setting of a load case: ``done`` requests in ``seconds`` (throughput = done / seconds);
    ``speedup``: throughput over the same case's with 1 worker in the same run."""

    case: str
    setting: str  # "2 workers", "200/s offered"
    workers: int | None
    done: int
    errors: int
    seconds: float
    rss_mb: float
    rows: int = 0
    speedup: float | None = None
    offered_per_s: float | None = None
    p50_ms: float | None = None
    p99_ms: float | None = None
    max_ms: float | None = None

    @property
    def per_s(self) -> float:
        return self.done / self.seconds if self.seconds > 0 else 0.0


def with_speedups(rows: list[LoadRow]) -> list[LoadRow]:
    """Each worker count's throughput over the 1-worker throughput of the same case."""
    from dataclasses import replace

    base = {r.case: r.per_s for r in rows if r.workers == 1 and r.per_s > 0}
    return [replace(r, speedup=r.per_s / base[r.case]) if r.workers and r.case in base else r for r in rows]


def machine() -> dict[str, Any]:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory_kb = 0
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                memory_kb = int(line.split()[1])
    except OSError:
        pass
    return {"cores": os.cpu_count() or 0, "cpu": cpu, "memory_gib": round(memory_kb / 1024 / 1024, 1),
            "kernel": platform.release()}


def versions(postgres: str, redis_version: str) -> dict[str, str]:
    def version(package: str) -> str:
        try:
            return metadata.version(package)
        except metadata.PackageNotFoundError:
            return "-"

    return {"python": platform.python_version(), "postgresql": postgres, "redis": redis_version,
            "sqlalchemy": version("SQLAlchemy"), "psycopg": version("psycopg"), "rq": version("rq"),
            "dsr": commit(), "source": source_digest()}


def source_digest() -> str:
    """SHA-256 (12 hex digits) of the code measured (dsr/, workers/, migrations/): two runs of the same
    commit with different uncommitted changes tell apart."""
    import hashlib

    digest = hashlib.sha256()
    root = HERE.parent
    for folder in ("dsr", "workers", "migrations"):
        for file in sorted((root / folder).rglob("*")):
            if file.suffix in (".py", ".yaml", ".yml") and "__pycache__" not in file.parts:
                digest.update(file.relative_to(root).as_posix().encode() + b"\0" + file.read_bytes())
    return digest.hexdigest()[:12]


def commit() -> str:
    """The checked-out commit, read from .git (no git process needed); '-' outside a checkout."""
    git = HERE.parent / ".git"
    try:
        if git.is_file():  # a worktree: "gitdir: <path>"
            git = (HERE.parent / git.read_text().split(":", 1)[1].strip()).resolve()
        head = (git / "HEAD").read_text().strip()
        if not head.startswith("ref:"):
            return head[:7]
        ref = head.split(":", 1)[1].strip()
        for folder in (git, _common_dir(git)):
            if (folder / ref).is_file():
                return (folder / ref).read_text().strip()[:7]
            packed = folder / "packed-refs"
            if packed.is_file():
                for line in packed.read_text().splitlines():
                    if line.endswith(" " + ref):
                        return line.split()[0][:7]
    except (OSError, IndexError):
        pass
    return "-"


def _common_dir(git: Path) -> Path:
    common = git / "commondir"
    return (git / common.read_text().strip()).resolve() if common.is_file() else git


def table(rows: list[Row]) -> str:
    pages = any(r.pages is not None for r in rows)
    lines = ["| case | size | rows | floor s | dsr s | ratio | rows/s | peak RSS MB | floor RSS MB | runs |"
             + (" pages |" if pages else ""),
             "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|" + ("--:|" if pages else "")]
    for r in rows:
        lines.append(f"| {r.case} | {r.size:,} | {r.rows:,} | {r.floor_s:.3f} | {r.dsr_s:.3f} | {r.ratio:.2f} | "
                     f"{r.rows_per_s:,.0f} | {r.rss_mb:.0f} | {r.floor_rss_mb:.0f} | {r.runs} |"
                     + (f" {_opt(r.pages, '{:d}')} |" if pages else ""))
    return "\n".join(lines)


def load_table(rows: list[LoadRow]) -> str:
    """Throughput and latency: one line per setting; a dash where a figure does not apply."""
    lines = ["| case | setting | done | errors | seconds | requests/s | speed-up | offered/s | p50 ms | p99 ms "
             "| max ms | peak RSS MB |",
             "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|"]
    for r in rows:
        lines.append(f"| {r.case} | {r.setting} | {r.done:,} | {r.errors:,} | {r.seconds:.2f} | {r.per_s:,.2f} | "
                     f"{_opt(r.speedup, '{:.2f}x')} | {_opt(r.offered_per_s, '{:.0f}')} | "
                     f"{_opt(r.p50_ms, '{:.1f}')} | {_opt(r.p99_ms, '{:.1f}')} | {_opt(r.max_ms, '{:.1f}')} | "
                     f"{r.rss_mb:.0f} |")
    return "\n".join(lines)


def _opt(value: float | None, form: str) -> str:
    return "-" if value is None else form.format(value)


def history() -> list[dict[str, Any]]:
    if not RESULTS_JSON.is_file():
        return []
    return list(json.loads(RESULTS_JSON.read_text(encoding="utf-8")).get("runs", []))


def load_regressions(rows: list[LoadRow], past: list[dict[str, Any]]) -> list[str]:
    """Throughput and speed-up more than 20% lower, p99 more than 20% higher than last recorded."""
    last: dict[tuple[str, str], tuple[dict[str, Any], str]] = {}
    for run in past:
        for r in run.get("load", []):
            last[(r["case"], r["setting"])] = (r, run.get("date", "?"))
    found = []
    for r in rows:
        before, date = last.get((r.case, r.setting), ({}, "?"))
        for label, key, now, lower_is_worse in (("requests/s", "per_s", r.per_s, True),
                                                ("speed-up", "speedup", r.speedup, True),
                                                ("p99 ms", "p99_ms", r.p99_ms, False)):
            was = before.get(key)
            if now is None or not was:
                continue
            if (now < was / REGRESSION) if lower_is_worse else (now > was * REGRESSION):
                found.append(f"REGRESSION {r.case} ({r.setting}): {label} {now:,.2f}, was {was:,.2f} on {date} "
                             f"({(now / was - 1) * 100:+.0f}%)")
    return found


def regressions(rows: list[Row], past: list[dict[str, Any]]) -> list[str]:
    """Each figure against the last recorded ratio of the same case and size."""
    last: dict[tuple[str, int], tuple[float, str]] = {}
    for run in past:  # oldest first: later runs overwrite
        for r in run.get("results", []):
            last[(r["case"], int(r["size"]))] = (float(r["ratio"]), run.get("date", "?"))
    found = []
    for r in rows:
        before = last.get((r.case, r.size))
        if before and r.ratio > before[0] * REGRESSION:
            noisy = " (floor under 50 ms: mostly fixed costs and noise)" if r.floor_s < NOISY_FLOOR else ""
            found.append(f"REGRESSION {r.case} at {r.size:,} rows: ratio {r.ratio:.2f}, was {before[0]:.2f} "
                         f"on {before[1]} (+{(r.ratio / before[0] - 1) * 100:.0f}%){noisy}")
    return found


def section(date: str, command: str, info: dict[str, Any], rows: list[Row], notes: list[str],
            extra: list[str], load: list[LoadRow] | None = None) -> str:
    m, v = info["machine"], info["versions"]
    out = [
        f"## {date}, dsr {v['dsr']} (source {v.get('source', '-')})",
        "",
        f"Command: `{command}`",
        "",
        f"Machine: {m['cores']} cores ({m['cpu']}), {m['memory_gib']} GiB memory, Linux {m['kernel']}. "
        f"Versions: Python {v['python']}, PostgreSQL {v['postgresql']}, Redis {v['redis']}, "
        f"SQLAlchemy {v['sqlalchemy']}, psycopg {v['psycopg']}, rq {v['rq']}.",
        "",
        table(rows) if rows else "(no per-size case run)",
        "",
    ]
    if load:
        out += [load_table(load), ""]
    out += [f"- {line}" for line in [*notes, *extra]]
    return "\n".join(out).rstrip() + "\n"


def record(date: str, command: str, info: dict[str, Any], rows: list[Row], notes: list[str],
           extra: list[str], load: list[LoadRow] | None = None) -> None:
    text = RESULTS_MD.read_text(encoding="utf-8") if RESULTS_MD.is_file() else _HEADER
    RESULTS_MD.write_text(text.rstrip() + "\n\n" + section(date, command, info, rows, notes, extra, load),
                          encoding="utf-8")
    runs = history()
    runs.append({"date": date, "command": command, **info, "notes": notes,
                 "results": [{**asdict(r), "ratio": round(r.ratio, 4), "rows_per_s": round(r.rows_per_s)}
                             for r in rows],
                 "load": [{**asdict(r), "per_s": round(r.per_s, 3)} for r in load or []]})
    RESULTS_JSON.write_text(json.dumps({"runs": runs}, indent=1) + "\n", encoding="utf-8")


def now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")


_HEADER = """# Benchmark results

Appended by `make bench` (`python -m bench.run`, see `bench/README.md`), newest last; the same
figures are in `results.json`, from which the next run reads the previous ones. **floor** is
PostgreSQL's own `COPY (SELECT * FROM t WHERE <the subject's rows>) TO STDOUT (FORMAT csv)` read
through psycopg into a file, summed over the store's tables, measured in the same run; **ratio** is
dsr's time over the floor's; **rows** are the subject's rows in the SQL store; **peak RSS** is
the measuring process's own high-water mark (VmHWM), for the end-to-end case the `dsr worker`
process with its work horses. Times are the best of **runs** runs, each in a fresh process; the
floor is measured as often, right before each case. **pages**: of the PDF report (`pdf_report`).

The second table (from the run that added it on) holds the load cases, each setting run once:
**done** requests (completed, or answered 202 for intake) and **errors** in **seconds**,
**requests/s** = done / seconds, **speed-up** = requests/s over the same case's on 1 worker,
**offered/s** the fixed rate of intake, **p50/p99/max ms** its latencies from each submission's due
time (open loop), **peak RSS** of the workers (or gunicorn).

**source** is a digest of `dsr/`, `workers/` and `migrations/` as measured (uncommitted changes
included), next to the commit. Targets: `collect_sql` at 1,000,000 rows within 2x the floor and
under 300 MB (issue 3); `pdf_report` at 1,000,000 rows under 10 s and 100 pages (issue 4);
`scale_small_requests` at least 1.7x from 1 to 2 workers, `intake` p99 under 100 ms at 200/s on 2
cores (issue 5).

"""
