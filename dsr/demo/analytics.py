"""Make-believe analytics events: the daily JSON-lines exports of the portal's reach measurement
(the notice's "AWS analytics, Germany region", a processor), one file per day such as
``events-2026-03-05.jsonl.gz``, the newest day uncompressed.

Events exist only while the person's analytics consent was in force, as the portal's ``consents``
table records it (``consent_windows``), and only for the last ``DAYS`` days before the build (the
data map keeps analytics data 30 days from collection: the demo holds nothing its map says is gone).
Each browser has a pseudonymous visitor ID (the analytics cookie); events after a login also carry
the customer number, those before it only the visitor ID, which the store links to the person
(``link_fields``). Max Mustermann
(``K00000001``) uses a laptop and a phone. One office browser is shared by two other customers, so
its anonymous events belong to neither; anonymous visitors who never log in come and go.
Everything is invented and deterministic for a given seed.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, text

from dsr.demo.logs import json_line, write_lines

DAYS = 30
PAGES = ["/", "/produkte", "/preise", "/produkte/sms-api", "/produkte/voice-api", "/portal/dashboard",
         "/portal/usage", "/portal/invoices", "/portal/api-keys", "/hilfe"]
EVENTS = ["page_view", "page_view", "page_view", "click", "scroll", "form_submit", "video_play"]
CAMPAIGNS = [None, None, None, {"source": "newsletter", "medium": "email", "campaign": "2026-spring-sms"},
             {"source": "google", "medium": "cpc", "campaign": "voice-api"}]
DEVICES = [{"type": "desktop", "browser": "Chrome 124", "os": "Windows 11"},
           {"type": "desktop", "browser": "Firefox 125", "os": "Linux"},
           {"type": "mobile", "browser": "Safari 17", "os": "iOS 17"}]
REGIONS = ["DE-NW", "DE-BY", "DE-BE", "DE-HH"]
MAX = "K00000001"


@dataclass(frozen=True)
class ConsentWindow:
    customer_number: str
    granted_at: datetime
    withdrawn_at: datetime | None


def consent_windows(engine: Engine) -> list[ConsentWindow]:
    """Each account's analytics consents, from the demo portal database."""
    with engine.connect() as conn:
        rows = conn.execute(text(
            "SELECT a.customer_number, c.granted_at, c.withdrawn_at FROM consents c "
            "JOIN accounts a ON a.id = c.account_id WHERE c.purpose = 'analytics' ORDER BY a.id, c.id"))
        return [ConsentWindow(r[0], _aware(r[1]), _aware(r[2]) if r[2] is not None else None) for r in rows]


def _aware(value: Any) -> datetime:
    if isinstance(value, str):  # SQLite without a type: ISO text
        value = datetime.fromisoformat(value)
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def build(folder: Path, windows: list[ConsentWindow], *, events_per_day: int = 6, seed: int = 42,
          now: datetime | None = None) -> dict[str, int]:
    """Write the daily export files under ``folder`` (replacing earlier ``events-*`` files) for the
    last ``DAYS`` - 1 days before ``now`` (default: now) and return the event count per file name."""
    rng = random.Random(seed)
    end = now or datetime.now(UTC)
    # A day short of the period, so the data stays within it for a day after the build.
    recent = [ConsentWindow(w.customer_number, max(w.granted_at, end - timedelta(days=DAYS - 1)),
                            min(w.withdrawn_at or end, end)) for w in windows]
    recent = [w for w in recent if w.withdrawn_at is not None and w.granted_at < w.withdrawn_at]
    days: dict[date, list[tuple[datetime, dict[str, Any]]]] = {}
    for n, window in enumerate(recent):
        for at, event in _events(rng, window, n, events_per_day):
            days.setdefault(at.date(), []).append((at, event))
    shared = [w for w in recent if w.customer_number != MAX][:2]
    if len(shared) == 2:
        for at, event in _shared_browser(rng, shared, events_per_day):
            days.setdefault(at.date(), []).append((at, event))
    if days:
        for at, event in _strangers(rng, min(days), max(days)):
            days.setdefault(at.date(), []).append((at, event))
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob("events-*"):
        old.unlink()
    counts: dict[str, int] = {}
    newest = max(days, default=None)
    for day in sorted(days):
        lines = [json_line(event) for _at, event in sorted(days[day], key=lambda item: item[0])]
        name = f"events-{day.isoformat()}.jsonl" + ("" if day == newest else ".gz")
        write_lines(folder / name, lines)
        counts[name] = len(lines)
    return counts


def _events(rng: random.Random, window: ConsentWindow, n: int,
            per_day: int) -> Iterator[tuple[datetime, dict[str, Any]]]:
    """One person's visits while their consent lasted (``window``, cut to the days kept): some days, a
    few events each, the first of a visit before the login (visitor ID only), the rest after it."""
    assert window.withdrawn_at is not None
    end = window.withdrawn_at
    browsers = [f"v-{rng.getrandbits(64):016x}" for _ in range(2 if window.customer_number == MAX else 1)]
    day = window.granted_at
    while day < end:
        if rng.random() < 0.5 or window.customer_number == MAX:
            visitor = rng.choice(browsers)
            device = DEVICES[2] if visitor == browsers[-1] and len(browsers) > 1 else DEVICES[n % 2]
            session = f"s-{rng.getrandbits(48):012x}"
            at = day + timedelta(minutes=rng.randrange(0, 20 * 60))
            for k in range(rng.randrange(2, per_day + 1)):
                at += timedelta(seconds=rng.randrange(5, 300))
                if at >= end:
                    break
                yield at, event_record(rng, at, visitor, session, window.customer_number if k else None, device,
                                 first=k == 0)
        day += timedelta(days=1)


def _shared_browser(rng: random.Random, people: list[ConsentWindow],
                    per_day: int) -> Iterator[tuple[datetime, dict[str, Any]]]:
    """One office browser that two customers log in on (on days both had consented)."""
    start = max(p.granted_at for p in people)
    end = min(p.withdrawn_at or start for p in people)
    visitor = f"v-{rng.getrandbits(64):016x}"
    for index, day in enumerate(_days(start, min(end, start + timedelta(days=4)))):
        person = people[index % 2]
        session, at = f"s-{rng.getrandbits(48):012x}", day + timedelta(hours=9, minutes=rng.randrange(0, 480))
        for k in range(per_day // 2 or 1):
            at += timedelta(seconds=rng.randrange(5, 300))
            if at < end:
                yield at, event_record(rng, at, visitor, session, person.customer_number if k else None, DEVICES[0],
                                 first=k == 0)


def _strangers(rng: random.Random, first: date, last: date) -> Iterator[tuple[datetime, dict[str, Any]]]:
    """Visitors who consented on the web site but never log in: nobody dsr can name."""
    start = datetime.combine(first, datetime.min.time(), UTC) + timedelta(days=1)  # within the days kept
    span = max((last - first).days - 1, 1) * 86400
    for _ in range(max(10, span // 86400)):
        at = start + timedelta(seconds=rng.randrange(0, span))
        yield at, event_record(rng, at, f"v-{rng.getrandbits(64):016x}", f"s-{rng.getrandbits(48):012x}", None,
                         rng.choice(DEVICES), first=True)


def _days(start: datetime, end: datetime) -> Iterator[datetime]:
    day = start
    while day < end:
        yield day
        day += timedelta(days=1)


def event_record(rng: random.Random, at: datetime, visitor: str, session: str, account: str | None,
           device: dict[str, str], *, first: bool) -> dict[str, Any]:
    page = rng.choice(PAGES[5:9] if account else PAGES[:5] + PAGES[9:])
    return {
        "time": at.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "visitor_id": visitor, "session_id": session, "account": account,
        "event": "page_view" if first else rng.choice(EVENTS), "page": page,
        "referrer": rng.choice([None, "https://www.google.de/", "https://portal.example.com/"]) if first else None,
        "campaign": rng.choice(CAMPAIGNS) if first else None,
        "device": device, "region": rng.choice(REGIONS), "consent_banner": "2025-11",
    }
