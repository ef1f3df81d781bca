"""The letter that confirms an erasure (Art. 17, Art. 12(3)-(4), Art. 19 GDPR): WeasyPrint and Jinja2.

``confirmation_data(datamap, request, outcome, locale, backup_days=...)`` turns what the erasure did
(the outcome the caller records per store and table) into a ``ConfirmationData`` of plain, localized
values; ``build_confirmation(data, out)`` renders it. Both are pure: no Flask, no database, no connector.

A letter is a legal statement, so the data says only what the outcome proves: a category appears as
erased only with records deleted or emptied in a store that finished; a store that did not finish is
named as still in progress and nothing there is claimed; recipients only when they were told; backups
only when the caller knows their window. Nothing about the installation reaches it: the data holds
labels and texts of the data map, never a store's connection, a connector's notes or a path. The
wording is in ``templates/confirmation/texts/<locale>.html``.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta, tzinfo
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from weasyprint import HTML

from dsr.config import project_folder
from dsr.datamap.model import Contact, DataMap, Localized
from dsr.domain.erasure import Step, plan
from dsr.exports.package import sha256_file
from dsr.exports.report import AssetFetcher, ReportInfo, _environment, store_label
from dsr.exports.report_model import LOCALES, localized

__all__ = ["ConfirmationData", "Erased", "Kept", "Party", "ReportInfo", "build_confirmation", "confirmation_data",
           "templates_folder"]

DONE = "done"
# A kept category with this erasure policy is not the subject's data (our staff): never called restricted.
NOT_APPLICABLE = "not_applicable"
AFTER_CONTRACT = "after_contract"


@dataclass(frozen=True)
class Party:
    """A contact as the letter prints it (controller, DPO, supervisory authority)."""

    name: str
    address: str | None = None
    email: str | None = None
    phone: str | None = None
    url: str | None = None
    scope: str = ""  # an authority's competence, in the letter's language


@dataclass(frozen=True)
class Erased:
    """One data category's erasure: records deleted, records whose personal fields were emptied, where."""

    title: str
    deleted: int
    changed: int
    systems: tuple[str, ...]


@dataclass(frozen=True)
class Kept:
    """Records of one category kept for one reason: why, under which provision, until when, where."""

    title: str
    records: int
    reason: str
    provision: str
    until: str
    systems: tuple[str, ...]
    # Kept under a duty or for a purpose of its own, and used for nothing else (Art. 17(3), 18(2)).
    restricted: bool
    # Needed while the subject's contract runs (erasure policy after_contract, contract not ended).
    contract: bool
    # When the retention register erases them: (day, records), earliest first; empty where the day is
    # not known yet (the contract's end, a person's decision).
    erasable: tuple[tuple[date, int], ...] = ()


@dataclass(frozen=True)
class ConfirmationData:
    locale: str  # de | en
    reference: str
    received_at: datetime
    answered_at: datetime
    legal_end: date
    controller: Party
    dpo: Party
    erased: tuple[Erased, ...]
    kept: tuple[Kept, ...]
    pending: tuple[str, ...]  # systems whose erasure has not finished: nothing there is claimed
    searched: tuple[str, ...]  # every system the erasure covered
    recipients: tuple[str, ...]  # names of the recipients told of the erasure (Art. 19)
    authorities: tuple[Party, ...]  # where to complain about what was kept or is not done yet
    backup_days: int | None  # backups are overwritten within this many days; None: not said
    contract_ended: bool
    timezone: str = "Europe/Berlin"  # dates are shown in this zone

    def __post_init__(self) -> None:
        if self.locale not in LOCALES:
            raise ValueError(f"locale must be one of {', '.join(LOCALES)}, not {self.locale!r}")
        if self.backup_days is not None and self.backup_days < 0:
            raise ValueError("backup_days must not be negative")

    @property
    def nothing(self) -> bool:
        """Every system finished and none holds anything of the subject that could be erased."""
        return not (self.erased or self.kept or self.pending)


def templates_folder() -> Path:
    return project_folder("templates") / "confirmation"


def build_confirmation(data: ConfirmationData, out: Path, *, templates: Path | None = None) -> ReportInfo:
    """Render the letter to ``out`` (written under a temporary name, then renamed)."""
    folder = (templates or templates_folder()).resolve()
    env = _environment(str(folder), data.locale)
    html = env.get_template("letter.html").render(context(data))
    document = HTML(string=html, base_url=folder.as_uri() + "/", url_fetcher=AssetFetcher.for_folder(folder))
    rendered = document.render()
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(f"{out.name}.{os.getpid()}.partial")  # two attempts never share one
    rendered.write_pdf(partial, pdf_tags=True)
    partial.replace(out)
    return ReportInfo(out, len(rendered.pages), out.stat().st_size, sha256_file(out))


def context(data: ConfirmationData) -> dict[str, Any]:
    """Everything the templates see, as plain values."""
    zone: tzinfo = ZoneInfo(data.timezone)
    answered = _local(data.answered_at, zone)
    kept = [{**_plain(k), **_days(k.erasable, answered.date())} for k in data.kept]
    return {
        "locale": data.locale,
        "request": {"reference": data.reference, "received_at": _local(data.received_at, zone),
                    "answered_at": answered, "legal_end": data.legal_end,
                    "created": answered.isoformat(timespec="seconds")},
        "controller": _plain(data.controller), "dpo": _plain(data.dpo),
        "nothing": data.nothing,
        "erased": [_plain(e) for e in data.erased],
        "kept": kept,
        "restricted": [k["title"] for k in kept if k["restricted"]],
        "contract": list(dict.fromkeys(k["title"] for k in kept if k["contract"])),
        "pending": list(data.pending),
        "searched": list(data.searched),
        "recipients": list(data.recipients),
        "authorities": [_plain(a) for a in data.authorities],
        "backup_days": data.backup_days if data.erased else None,  # no copies of what was not erased
        "complaint": bool(data.kept or data.pending),
    }


def confirmation_data(datamap: DataMap, request: Mapping[str, Any], outcome: Mapping[str, Any], locale: str, *,
                      backup_days: int | None, timezone: str = "Europe/Berlin") -> ConfirmationData:
    """The letter's data from the data map, the request and the erasure's outcome.

    ``request``: reference, received_at, legal_end, answered_at (default: now). ``outcome``::

        {"contract_ended": bool,
         "stores": {name: {"by": "connector" | "processor" | "manual", "status": "done" | "failed",
                           "tables": {table: {"category": id (may be missing), "method": ...,
                                              "found": n, "deleted": n, "changed": n, "retained": n,
                                              "until": rule id | None, "provision": str | None,
                                              "kept": {"de": ..., "en": ...} | None}},
                           "notes": [...]}},            # for the DPO office: never read here
         "recipients": [{"id": recipient id, "channel": ..., "told_at": ...}]}

    A store whose status is not "done" is named as still in progress, and nothing of it is claimed.
    """
    loc = locale[:2].lower() if locale[:2].lower() in LOCALES else "de"
    contract_ended = bool(outcome.get("contract_ended"))
    steps = {(s.store, s.table): s for p in plan(datamap, contract_ended=contract_ended).values() for s in p.steps}
    stores: Mapping[str, Mapping[str, Any]] = outcome.get("stores") or {}
    order = list(datamap.stores)
    names = sorted(stores, key=lambda n: (order.index(n), "") if n in order else (len(order), n))
    erased: dict[str, dict[str, Any]] = {}
    kept: dict[tuple[str, str, str, str], dict[str, Any]] = {}
    pending: list[str] = []
    concerned: list[str] = []  # categories kept or not yet erased: their authorities hear complaints
    for name in names:
        entry, store = stores[name], datamap.stores.get(name)
        label = store_label(store, name, loc)
        tables: Mapping[str, Mapping[str, Any]] = entry.get("tables") or {}
        categories = {t: _category(datamap, name, t, dict(c)) for t, c in tables.items()}
        if entry.get("status") != DONE:
            pending.append(label)
            concerned += [c for c in categories.values() if c]
            concerned += [t.category for t in store.tables.values()] if store else []
            continue
        for table, counts in tables.items():
            cid = categories[table]
            category = datamap.categories.get(cid) if cid else None
            title = localized(category.title, loc) if category else label
            key = cid or f"store:{name}"
            deleted, changed, retained = (_count(counts, k) for k in ("deleted", "changed", "retained"))
            if deleted or changed:
                e = erased.setdefault(key, {"title": title, "deleted": 0, "changed": 0, "systems": []})
                e["deleted"] += deleted
                e["changed"] += changed
                e["systems"].append(label)
            if retained:
                step = steps.get((name, table))
                item = _kept(datamap, counts, step, loc)
                contract = category is not None and category.erasure == AFTER_CONTRACT and not contract_ended
                k = kept.setdefault((key, item["reason"], item["provision"], item["until"]), {
                    "title": title, "records": 0, **item, "systems": [], "contract": contract,
                    "restricted": category is not None and category.erasure != NOT_APPLICABLE and not contract})
                k["records"] += retained
                k["systems"].append(label)
                for day, records in counts.get("erasable") or ():
                    dates = k.setdefault("erasable", {})
                    dates[date.fromisoformat(str(day))] = dates.get(date.fromisoformat(str(day)), 0) + int(records)
                if cid:
                    concerned.append(cid)
    rank = {c: n for n, c in enumerate(datamap.categories)}
    erased_order = sorted(erased, key=lambda k: (rank.get(k, len(rank)), list(erased).index(k)))
    kept_order = sorted(kept, key=lambda k: (rank.get(k[0], len(rank)), list(kept).index(k)))
    return ConfirmationData(
        locale=loc,
        reference=str(request["reference"]),
        received_at=request["received_at"],
        answered_at=request.get("answered_at") or datetime.now(UTC),
        legal_end=request["legal_end"],
        controller=_party(datamap.controller),
        dpo=_party(datamap.controller.dpo),
        erased=tuple(Erased(e["title"], e["deleted"], e["changed"], _unique(e["systems"]))
                     for e in (erased[k] for k in erased_order)),
        kept=tuple(Kept(k["title"], k["records"], k["reason"], k["provision"], k["until"], _unique(k["systems"]),
                        k["restricted"], k["contract"], tuple(sorted((k.get("erasable") or {}).items())))
                   for k in (kept[key] for key in kept_order)),
        pending=_unique(pending),
        searched=_unique(store_label(datamap.stores.get(n), n, loc) for n in names),
        recipients=_unique(datamap.recipients[str(r.get("id"))].name for r in outcome.get("recipients") or ()
                           if str(r.get("id")) in datamap.recipients),
        authorities=_authorities(datamap, concerned, loc),
        backup_days=backup_days,
        contract_ended=contract_ended,
        timezone=timezone,
    )


def _category(datamap: DataMap, store: str, table: str, counts: Mapping[str, Any]) -> str | None:
    """The table's category: as recorded, else the data map's; None when the map knows neither."""
    cid = counts.get("category")
    if cid and str(cid) in datamap.categories:
        return str(cid)
    spec = datamap.stores[store].tables.get(table) if store in datamap.stores else None
    return spec.category if spec is not None and spec.category in datamap.categories else None


def _count(counts: Mapping[str, Any], key: str) -> int:
    return max(int(counts.get(key) or 0), 0)


def _kept(datamap: DataMap, counts: Mapping[str, Any], step: Step | None, loc: str) -> dict[str, str]:
    """Why, under which provision and until when records are kept: as recorded with the outcome, else as
    the erasure plan has it (the reason: the table's own, else its category's policy; the provision: the
    retention rule's reference, else the category's statutory retention)."""
    reason: Localized | None = counts.get("kept") or (step.kept if step else None)
    rule_id = counts.get("until") or (step.until if step else None)
    rule = datamap.retention.get(str(rule_id)) if rule_id else None
    provision = counts.get("provision") or (rule.reference if rule else None) or (step.provision if step else None)
    return {"reason": localized(reason, loc), "provision": str(provision or ""),
            "until": localized(rule.description, loc) if rule else ""}


def _authorities(datamap: DataMap, categories: Iterable[str], loc: str) -> tuple[Party, ...]:
    """The authorities competent for the categories concerned; with none known, all of the map's."""
    ids = list(dict.fromkeys(datamap.categories[c].authority for c in categories if c in datamap.categories))
    return tuple(_party(datamap.authorities[a], localized(datamap.authorities[a].scope, loc))
                 for a in ids or datamap.authorities)


def _party(c: Contact, scope: str = "") -> Party:
    url = c.url if c.url and c.url.startswith(("https://", "http://")) else None
    return Party(c.name, c.address, c.email, c.phone, url, scope)


def _unique(values: Iterable[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(values))


def _local(value: datetime, zone: tzinfo) -> datetime:
    return (value if value.tzinfo else value.replace(tzinfo=UTC)).astimezone(zone)


def _days(erasable: tuple[tuple[date, int], ...], today: date) -> dict[str, Any]:
    """The register's days as a letter says them: records whose day has come are erased by the next
    daily run (``overdue``, ``overdue_by``); the later days one by one, or as a span when there are many."""
    overdue = sum(n for day, n in erasable if day <= today)
    later = [(day, n) for day, n in erasable if day > today]
    span = (later[0][0], later[-1][0], sum(n for _d, n in later)) if len(later) > 3 else None
    return {"overdue": overdue, "overdue_by": today + timedelta(days=1), "later": [] if span else later,
            "span": span}


def _plain(value: Any) -> dict[str, Any]:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in vars(value).items()}
