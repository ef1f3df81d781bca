"""Make-believe web server and API logs as JSON lines, rotated the way logrotate leaves them.

``build(folder)`` writes, oldest to newest, ``web/access.log.2.gz``, ``web/access.log.1`` and
``web/access.log`` (the portal's web server) and ``api/api.log.2.gz``, ``api/api.log.1`` and
``api/api.log`` (the API gateway). Everything is invented and deterministic for a given seed;
addresses come from the documentation ranges 198.51.100.0/24 and 203.0.113.0/24 (RFC 5737).

Every file has lines of Max Mustermann (``max.mustermann@example.com``, customer number
``K00000001``): logged in, logged in with the address in capitals, and anonymous from his address;
``web/access.log.1`` also has a few lines that are not JSON. The other subjects are the first
people of the demo portal database built with the same seed (``portal.build``), so e-mail
addresses and customer numbers agree between the two.
"""

from __future__ import annotations

import gzip
import json
import random
import re
from collections.abc import Iterator
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any

from dsr.demo import portal

MAX_EMAIL = portal.DEMO_SUBJECT
MAX_CUSTOMER = "K00000001"
# Oldest first; each file holds two days, and this share of the lines. The six days end today: the
# data map keeps web logs 7 days, and the demo holds nothing its own map says is gone.
ROTATIONS = (("2.gz", 0.4), ("1", 0.3), ("", 0.3))
DAYS = 2 * len(ROTATIONS)
MIN_LINES = 30

PAGES = ["/", "/produkte", "/preise", "/datenschutz", "/impressum", "/static/app.js", "/static/app.css",
         "/favicon.ico"]
PORTAL_PAGES = ["/portal/dashboard", "/portal/usage", "/portal/invoices", "/portal/api-keys", "/portal/team",
                "/portal/settings", "/api/session"]
AGENTS = [
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0 Safari/537.36",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_4) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4 Safari/605.1",
    "Mozilla/5.0 (X11; Linux x86_64; rv:125.0) Gecko/20100101 Firefox/125.0",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148",
]
SDKS = [("python", "3.2.1"), ("node", "3.14.0"), ("java", "8.9.2"), ("curl", "8.7.1")]
MALFORMED = [
    '{"time": "2026-03-03T11:59:58Z", "remote_addr": "198.51.100.77", "method": "GE',  # cut off mid-write
    '198.51.100.23 - - [03/Mar/2026:12:00:01 +0000] "GET /health HTTP/1.1" 200 2 "-" "kube-probe/1.29"',
    '{"time": "2026-03-03T12:00:02Z", "remote_addr": "198.51.100.9", "status": 200,}',  # trailing comma
]


def default_subjects(count: int = 12, seed: int = 42) -> list[dict[str, Any]]:
    """The first ``count`` people of the demo portal database built with ``seed`` (id 1 is Max)."""
    rng = random.Random(seed)
    people = [portal._person(rng, i) for i in range(1, count + 1)]
    return [{"email": p["email"], "customer_number": f"K{p['id']:08d}"} for p in people]


def build(folder: Path, *, subjects: list[dict[str, Any]] | None = None, lines: int = 2000,
          seed: int = 42, today: date | None = None) -> dict[str, int]:
    """Write the web logs (``lines`` lines) and API logs (half as many) under ``folder``, for the
    ``DAYS`` days before ``today`` (default: today in UTC); return the line count per file, by
    path relative to ``folder``. The six files are replaced; nothing else in the folder is touched."""
    if lines < MIN_LINES:
        raise ValueError(f"lines must be at least {MIN_LINES}")
    epoch = datetime.combine(today or datetime.now(UTC).date(), time.min, UTC) - timedelta(days=DAYS)
    people = _people(subjects if subjects is not None else default_subjects(seed=seed))
    rng = random.Random(seed)
    counts: dict[str, int] = {}
    for kind, name, total, render in (("web", "access.log", lines, _web_lines),
                                      ("api", "api.log", max(MIN_LINES, lines // 2), _api_lines)):
        out = folder / kind
        out.mkdir(parents=True, exist_ok=True)
        for index, (suffix, share) in enumerate(ROTATIONS):
            start = epoch + timedelta(days=2 * index)
            malformed = MALFORMED if (kind, suffix) == ("web", "1") else []
            text = list(render(rng, people, start, int(total * share), malformed))
            filename = f"{name}.{suffix}" if suffix else name
            write_lines(out / filename, text)
            counts[f"{kind}/{filename}"] = len(text)
    return counts


def _people(subjects: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each subject (``email``, ``customer_number``) with a fixed address; Max first, always."""
    listed = [s for s in subjects if str(s.get("email", "")).lower() != MAX_EMAIL]
    people = [{"email": MAX_EMAIL, "customer_number": MAX_CUSTOMER}, *listed]
    # Max has 203.0.113.10 to himself, so his anonymous lines are his alone.
    return [{**p, "ip": "203.0.113.10" if i == 0 else f"203.0.113.{11 + (i - 1) % 240}"}
            for i, p in enumerate(people)]


def _schedule(rng: random.Random, count: int, special: list[Any]) -> Iterator[tuple[int, Any]]:
    """``count`` slots, the ``special`` items at random places among them and ``None`` elsewhere."""
    places = dict(zip(sorted(rng.sample(range(count), len(special))), special, strict=True))
    for slot in range(count):
        yield slot, places.get(slot)


def _time(start: datetime, slot: int, count: int) -> str:
    at = start + timedelta(seconds=slot * (2 * 86400 // max(count, 1)))
    return at.strftime("%Y-%m-%dT%H:%M:%SZ")


def _web_lines(rng: random.Random, people: list[dict[str, Any]], start: datetime, count: int,
               malformed: list[str]) -> Iterator[str]:
    me = people[0]
    capitalised = "Max.Mustermann@Example.com"
    special: list[Any] = [("max", me["email"]), ("max", me["email"]), ("max", me["email"]), ("max", capitalised),
                          ("max_anonymous", None), *malformed]
    for slot, item in _schedule(rng, count, special):
        if isinstance(item, str):
            yield item
            continue
        agent = rng.choice(AGENTS)
        person: dict[str, Any]
        if item is not None:  # Max: logged in (account known), or anonymous from his own address
            person, user, logged_in, agent = me, item[1], item[0] == "max", AGENTS[0]
        elif len(people) > 1 and rng.random() < 0.5:  # another subject, logged in
            person = rng.choice(people[1:])
            user, logged_in = person["email"], True
        else:  # an anonymous visitor
            person, user, logged_in = {"ip": _visitor_ip(rng)}, None, False
        path = rng.choice(PORTAL_PAGES if logged_in else PAGES)
        yield json_line({
            "time": _time(start, slot, count), "remote_addr": person["ip"],
            "method": "POST" if path == "/api/session" else "GET", "path": path,
            "status": rng.choice([200, 200, 200, 200, 304, 404]) if not logged_in else rng.choice([200, 200, 302]),
            "bytes": rng.randrange(200, 90_000), "user_agent": agent,
            "referer": None if rng.random() < 0.4 else "https://portal.example.com/",
            "user": user if logged_in else None,
            "account": person.get("customer_number") if logged_in else None,
        })


def _api_lines(rng: random.Random, people: list[dict[str, Any]], start: datetime, count: int,
               malformed: list[str]) -> Iterator[str]:
    me = people[0]
    special: list[Any] = ["max"] * 4 + malformed
    for slot, item in _schedule(rng, count, special):
        if item is not None and item != "max":
            yield item
            continue
        person = me if item == "max" else rng.choice(people)
        number = int(re.sub(r"\D", "", str(person["customer_number"])) or 0)
        unauthorised = item is None and rng.random() < 0.05
        sdk, version = rng.choice(SDKS)
        endpoint = rng.choice(portal.ENDPOINTS)
        yield json_line({
            "time": _time(start, slot, count),
            "account": None if unauthorised else person["customer_number"],
            # Gateways log only the end of a key id, never a key.
            "api_key_id": None if unauthorised else f"key_***{number % 100:02d}",
            "endpoint": endpoint, "method": "GET" if endpoint == "/v1/numbers" else "POST",
            "status": 401 if unauthorised else rng.choice([200, 200, 201, 201, 400, 429]),
            "latency_ms": rng.randrange(8, 900), "remote_addr": _visitor_ip(rng) if unauthorised else person["ip"],
            "client": {"sdk": sdk, "version": version},
        })


def _visitor_ip(rng: random.Random) -> str:
    return f"198.51.100.{rng.randrange(1, 255)}"


def json_line(record: dict[str, Any]) -> str:
    return json.dumps(record, ensure_ascii=False, separators=(",", ":"))


def write_lines(path: Path, lines: list[str]) -> None:
    """A JSON-lines file, gzip-compressed for a ``.gz`` name, the same bytes for the same lines."""
    data = "".join(line + "\n" for line in lines).encode("utf-8")
    if path.suffix == ".gz":
        with path.open("wb") as raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as out:
            out.write(data)  # mtime 0 and no name: the same seed gives the same bytes
    else:
        path.write_bytes(data)
