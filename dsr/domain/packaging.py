"""The package a subject receives: the report, every table as CSV and JSON, media files, the data
dictionary and JSON Schemas, and a manifest of every file's size and SHA-256 (AC-06, AT-14)."""

from __future__ import annotations

import csv
import functools
import json
import logging
import time
import uuid
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, cast

from dsr.child import beside
from dsr.datamap import DataMap
from dsr.exports.json_files import add_json, dictionary, schemas
from dsr.exports.package import PackageWriter, PackedFile
from dsr.exports.report_model import PREVIEW_ROWS
from dsr.exports.sealed import SealingWriter
from dsr.models import Request, RequestType, Task

if TYPE_CHECKING:
    from dsr.exports.report import ReportInfo

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ReportOptions:
    preview_rows: int = PREVIEW_ROWS  # of each table, shown in the report (DSR_REPORT_PREVIEW_ROWS)
    timezone: str = "Europe/Berlin"  # dates and times in the report are shown in this zone (DSR_TIMEZONE)


@dataclass(frozen=True)
class Storage:
    root: Path

    def work_dir(self, request_id: uuid.UUID, store: str, attempt: int) -> Path:
        return self.root / "work" / str(request_id) / store / f"attempt-{attempt}"

    def request_work_dir(self, request_id: uuid.UUID) -> Path:
        return self.root / "work" / str(request_id)

    def package_path(self, request_id: uuid.UUID, filename: str) -> Path:
        return self.root / "packages" / str(request_id) / filename


def build_package(request: Request, tasks: list[Task], datamap: DataMap, storage: Storage,
                  now: datetime, seal_key: bytes, password: str | None = None,
                  options: ReportOptions = ReportOptions()) -> PackedFile:
    """Build the ZIP and seal it as it is written: what reaches the disk is encrypted; size and
    SHA-256 are the ZIP's, which the subject can check after download.

    The report, which needs only the first rows and the counts, is rendered in a child process
    (``dsr.child``) while this one writes the JSON twins and packs the data files: on two cores the
    two overlap."""
    started, cpu = time.perf_counter(), time.process_time()
    work = storage.request_work_dir(request.id)
    sources = {t.store: storage.root / t.checkpoint["output"] for t in tasks if t.checkpoint}
    facts = {"reference": request.reference, "type": request.type, "received_at": request.received_at,
             "legal_end": request.legal_end, "answered_at": now}
    counts = [{"store": t.store, "counts": t.counts or {}} for t in tasks]
    # Started first: forked before this process opens anything for the package.
    # Without the cyclic collector: its walks over WeasyPrint's boxes cost ~12% of the render, and the
    # report's memory is bounded (preview rows, not data) and returned when the child exits.
    rendering = beside(functools.partial(_report, datamap, facts, counts, sources, request.locale, options,
                                         work / "report" / "report.pdf"), collect_cycles=False)
    sealed: SealingWriter | None = None
    try:
        for folder in sources.values():
            # The JSON twin of each CSV, here rather than in the collect job: while the report renders
            # in its child, this process has a core to spare (1M rows: ~0.9 s of CPU).
            add_json(folder)
        docs = work / "documentation"
        _write_documentation(docs, dictionary(datamap, sources))
        sealed = SealingWriter(storage.package_path(request.id, f"{request.reference}.zip.sealed"), seal_key)
        # With a password: AES-256 encrypted as it is written; the password goes through a second channel.
        package = PackageWriter(cast(IO[bytes], sealed), password)
        for store, folder in sorted(sources.items()):
            package.add_folder(store, folder)
        packed, packing_cpu = time.perf_counter() - started, time.process_time() - cpu
        report = rendering.result()
        rendered = time.perf_counter() - started
        # "" puts the report at the top of the package, where a person opening it looks first.
        package.add_folder("", report.path.parent)
        package.add_folder("documentation", docs)
        package.finish(_manifest(request, tasks, datamap, now, report.pages))
    except BaseException:
        rendering.cancel()
        if sealed is not None:
            sealed.discard()
        raise
    sealed.close()
    report_cpu = f"{rendering.cpu_seconds:.2f} s CPU" if rendering.cpu_seconds is not None else "in a thread"
    log.info("package %s: %.2f s (data files packed after %.2f s, %.2f s CPU; report of %d pages ready after "
             "%.2f s, %s), %d bytes", request.reference, time.perf_counter() - started, packed, packing_cpu,
             report.pages, rendered, report_cpu, sealed.size)
    return PackedFile(sealed.target, sealed.size, sealed.sha256)


def _report(datamap: DataMap, facts: dict[str, Any], counts: list[dict[str, Any]], sources: dict[str, Path],
            locale: str, options: ReportOptions, out: Path) -> ReportInfo:
    from dsr.exports.report import build_report, report_data  # WeasyPrint: only where a package is built

    return build_report(report_data(datamap, facts, counts, sources, locale, formats=("csv", "json"),
                                    preview_limit=options.preview_rows, timezone=options.timezone), out)


def _manifest(request: Request, tasks: list[Task], datamap: DataMap, now: datetime, pages: int) -> dict[str, Any]:
    manifest: dict[str, Any] = {
        "reference": request.reference, "type": request.type, "received_at": request.received_at.isoformat(),
        "produced_at": now.isoformat(), "datamap_version": datamap.version, "locale": request.locale,
        "report": {"file": "report.pdf", "pages": pages},
        "stores": {t.store: t.counts.get("found", {}) for t in tasks},
    }
    if request.type == RequestType.PORTABILITY:
        # Art. 20 covers data provided or observed under consent or contract: say what was left out.
        manifest["scope"] = "portability (Art. 20 GDPR): only categories the data map marks portable"
        manifest["left_out"] = {t.store: t.counts["out_of_scope"] for t in tasks if t.counts.get("out_of_scope")}
        manifest["left_out_categories"] = sorted(cid for cid, c in datamap.categories.items()
                                                 if not c.portable and c.stored)
    return manifest


def _write_documentation(docs: Path, data_dictionary: dict[str, Any]) -> None:
    docs.mkdir(parents=True, exist_ok=True)
    (docs / "data-dictionary.json").write_text(json.dumps(data_dictionary, indent=2, ensure_ascii=False),
                                               encoding="utf-8")
    # The companion of the CSV headers for people with a spreadsheet: every file's columns, each with its
    # name in words (de/en) and what it holds.
    with (docs / "columns.csv").open("w", encoding="utf-8-sig", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(["file", "column", "label_de", "label_en", "description_de", "description_en"])
        for path, entry in data_dictionary["files"].items():
            for column, info in entry["columns"].items():
                label, meaning = info.get("label") or {}, info.get("description") or info.get("category_title") or {}
                writer.writerow([path, column, label.get("de", column), label.get("en", column),
                                 meaning.get("de", ""), meaning.get("en", "")])
    for name, schema in schemas(data_dictionary):
        target = docs / "schemas" / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(json.dumps(schema, indent=2, ensure_ascii=False), encoding="utf-8")
