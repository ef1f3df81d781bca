"""The demo portal database: accounts, invited users, payment means, API usage, call and message
records, support tickets, invoices and consents, as the seed privacy notice describes them, and the
internal data about a customer (AC-03): agent notes, fraud and misuse flags, and the log of staff
looking at the customer's data, with the staff in a table of their own.

Everything is invented and deterministic for a given seed. Subject 1 is always Max Mustermann
(``max.mustermann@example.com``) with rows in every table. The internal tables hold a few rows per
customer whatever ``rows`` and ``subject_rows`` say: they scale with the number of subjects only.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Date,
    DateTime,
    Engine,
    ForeignKey,
    Integer,
    MetaData,
    Numeric,
    String,
    Table,
    Text,
    insert,
)

DEMO_SUBJECT = "max.mustermann@example.com"
COUNSELLING_LINE = "+498001110111"  # Telefonseelsorge; on the Bundesnetzagentur list of counselling lines

metadata = MetaData()


def _id() -> Column[Any]:
    return Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=False)


def _account_fk() -> Column[Any]:
    return Column("account_id", ForeignKey("accounts.id"), nullable=False, index=True)


accounts = Table(
    "accounts", metadata, _id(),
    Column("customer_number", String(20), nullable=False, unique=True),
    Column("email", String(320), nullable=False, unique=True),
    Column("first_name", String(100)), Column("last_name", String(100)),
    Column("phone", String(40)), Column("mobile", String(40)),
    Column("company_name", String(200)), Column("company_address", String(300)),
    Column("vat_id", String(20)),
    Column("password_hash", String(200)), Column("mfa_enabled", Integer),
    Column("language", String(5)), Column("created_at", DateTime(timezone=True)),
    Column("status", String(20)),
)
invited_users = Table(
    "invited_users", metadata, _id(), _account_fk(),
    Column("email", String(320), nullable=False, index=True),
    Column("first_name", String(100)), Column("last_name", String(100)),
    Column("role", String(40)), Column("invited_at", DateTime(timezone=True)), Column("status", String(20)),
)
payment_methods = Table(
    "payment_methods", metadata, _id(), _account_fk(),
    Column("kind", String(20)), Column("holder", String(200)), Column("iban", String(34)),
    Column("card_last4", String(4)), Column("card_expiry", String(7)),
    Column("sepa_mandate_ref", String(35)), Column("sepa_mandate_date", Date),
    Column("created_at", DateTime(timezone=True)),
)
api_usage = Table(
    "api_usage", metadata, _id(), _account_fk(),
    Column("api_key_id", String(40)), Column("application_id", String(40)),
    Column("endpoint", String(200)), Column("method", String(10)), Column("status_code", Integer),
    Column("called_at", DateTime(timezone=True)), Column("ip_address", String(45)),
)
call_records = Table(
    "call_records", metadata, _id(), _account_fk(),
    Column("direction", String(10)), Column("from_number", String(40)), Column("to_number", String(40)),
    Column("started_at", DateTime(timezone=True)), Column("duration_s", Integer), Column("status", String(20)),
    Column("location", String(100)), Column("ip_address", String(45)),
    # The caller suppressed their number (CLIR): the network knows it, the subject must never see it.
    Column("caller_withheld", Boolean, nullable=False, default=False),
)
message_records = Table(
    "message_records", metadata, _id(), _account_fk(),
    Column("channel", String(10)), Column("from_number", String(40)), Column("to_number", String(40)),
    Column("sent_at", DateTime(timezone=True)), Column("status", String(20)), Column("segments", Integer),
    Column("ip_address", String(45)),
)
support_tickets = Table(
    "support_tickets", metadata, _id(), _account_fk(),
    Column("subject", String(200)), Column("body", Text), Column("status", String(20)),
    Column("opened_at", DateTime(timezone=True)), Column("closed_at", DateTime(timezone=True)),
)
invoices = Table(
    "invoices", metadata, _id(), _account_fk(),
    Column("invoice_number", String(30), unique=True), Column("issued_on", Date),
    Column("billed_name", String(200)), Column("billed_address", String(300)), Column("vat_id", String(20)),
    Column("net_amount", Numeric(12, 2)), Column("vat_amount", Numeric(12, 2)), Column("currency", String(3)),
)
invoice_lines = Table(
    "invoice_lines", metadata, _id(),
    Column("invoice_id", ForeignKey("invoices.id"), nullable=False, index=True),
    Column("description", String(200)), Column("quantity", Integer), Column("unit_price", Numeric(12, 4)),
)
consents = Table(
    "consents", metadata, _id(), _account_fk(),
    Column("purpose", String(40)), Column("banner_version", String(20)),
    Column("granted_at", DateTime(timezone=True)), Column("withdrawn_at", DateTime(timezone=True)),
)
# Internal data (AC-03). The staff directory is other people's data: an access answer names the staff
# who worked on the subject's data only as the data map allows (C-579/21: names only where essential).
employees = Table(
    "employees", metadata, _id(),
    Column("staff_number", String(20), nullable=False, unique=True),
    Column("name", String(200), nullable=False), Column("email", String(320)),
    Column("role", String(100)), Column("team", String(100)),
)
agent_notes = Table(
    "agent_notes", metadata, _id(), _account_fk(),
    Column("ticket_id", ForeignKey("support_tickets.id"), nullable=True, index=True),  # None: about the account
    Column("author_id", ForeignKey("employees.id"), nullable=False, index=True),
    Column("written_at", DateTime(timezone=True)), Column("note", Text),
)
fraud_flags = Table(
    "fraud_flags", metadata, _id(), _account_fk(),
    Column("flag", String(40), nullable=False), Column("reason", Text),
    Column("rule", String(200)),  # the detection rule that fired: internal, a trade secret
    Column("source", String(20)),  # rule_engine | staff
    Column("set_at", DateTime(timezone=True)),
    Column("set_by", ForeignKey("employees.id"), nullable=True, index=True),  # None: set by the rule engine
    Column("action", String(40)),  # what the flag caused
    Column("status", String(20)), Column("cleared_at", DateTime(timezone=True)),
)
access_log = Table(
    "access_log", metadata, _id(), _account_fk(),
    Column("accessed_at", DateTime(timezone=True), nullable=False),
    Column("employee_id", ForeignKey("employees.id"), nullable=False, index=True),
    Column("resource", String(40)), Column("action", String(20)), Column("purpose", String(40)),
    # The log is kept (accountability) when the ticket it names is erased: the database drops the link.
    Column("ticket_id", ForeignKey("support_tickets.id", ondelete="SET NULL"), nullable=True, index=True),
)

FIRST = ["Erika", "Jonas", "Leonie", "Felix", "Mia", "Paul", "Hannah", "Lukas", "Emma", "Noah", "Lea", "Ben"]
LAST = ["Musterfrau", "Schmidt", "Becker", "Wagner", "Hoffmann", "Schulz", "Koch", "Richter", "Klein", "Wolf"]
CITIES = ["Bonn", "Köln", "Düsseldorf", "Berlin", "Hamburg", "München", "Leipzig"]
ENDPOINTS = ["/v1/calls", "/v1/messages", "/v1/numbers", "/v1/verify", "/v1/applications"]
CALL_STATUS = ["completed", "busy", "failed", "no-answer", "cancelled"]
MSG_STATUS = ["delivered", "submitted", "rejected", "expired"]
EPOCH = datetime(2026, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class DemoSize:
    subjects: int = 50
    rows: int = 30  # usage records per subject, split over API usage, calls and messages
    # Usage records of subject 1 (Max) alone, when set: one big subject among small ones (benchmarks).
    subject_rows: int | None = None


def build(engine: Engine, size: DemoSize = DemoSize(), seed: int = 42, batch: int = 5000) -> dict[str, int]:
    """Drop and create the demo tables, fill them, and return the row count per table.

    On PostgreSQL through psycopg the rows go in with ``COPY ... FROM STDIN`` (millions of rows in
    seconds); elsewhere with batched INSERTs. The contents are the same either way.
    """
    from dsr.demo import blobs  # its index tables reference ours: drop them first

    blobs.drop(engine)
    metadata.drop_all(engine)
    metadata.create_all(engine)
    counts: dict[str, int] = {}
    rng = random.Random(seed)
    with engine.begin() as conn:
        copy = conn.dialect.name == "postgresql" and conn.dialect.driver == "psycopg"
        for table, rows in _generate(rng, size):
            if copy:
                _copy_in(conn.connection.driver_connection, table, rows)
            else:
                buffer: list[dict[str, Any]] = []
                for row in rows:
                    buffer.append(row)
                    if len(buffer) >= batch:
                        conn.execute(insert(table), buffer)
                        buffer.clear()
                if buffer:
                    conn.execute(insert(table), buffer)
            counts[table.name] = counts.get(table.name, 0) + _count(rows)
    return counts


def _copy_in(raw: Any, table: Table, rows: Iterable[dict[str, Any]]) -> None:
    """PostgreSQL: stream the rows with COPY FROM STDIN on the connection's open transaction."""
    names = [c.name for c in table.columns]
    columns = ", ".join(f'"{n}"' for n in names)
    with raw.cursor() as cursor, cursor.copy(f'COPY "{table.name}" ({columns}) FROM STDIN') as copy:
        for row in rows:
            copy.write_row([row.get(n) for n in names])


class _Counted:
    """Wraps a row generator and counts what it yielded, so build() reports without a second pass."""

    def __init__(self, rows: Iterator[dict[str, Any]]) -> None:
        self._rows, self.n = rows, 0

    def __iter__(self) -> Iterator[dict[str, Any]]:
        for row in self._rows:
            self.n += 1
            yield row


def _count(rows: Any) -> int:
    return rows.n if isinstance(rows, _Counted) else 0


def _generate(rng: random.Random, size: DemoSize) -> Iterator[tuple[Table, _Counted]]:
    people = [_person(rng, i) for i in range(1, size.subjects + 1)]
    yield accounts, _Counted(_accounts(rng, people))
    yield invited_users, _Counted(_invited(rng, people))
    yield payment_methods, _Counted(_payments(rng, people))
    per = max(1, size.rows // 3)
    # Subject 1's share when subject_rows is set, split the same way; None: like everybody else.
    big: int | None = None
    big_api: int | None = None
    if size.subject_rows is not None:
        big = max(1, size.subject_rows // 3)
        big_api = size.subject_rows - 2 * big
    yield api_usage, _Counted(_api_usage(rng, people, size.rows - 2 * per, big_api))
    yield call_records, _Counted(_calls(rng, people, per, big))
    yield message_records, _Counted(_messages(rng, people, per, big))
    yield support_tickets, _Counted(_tickets(rng, people))
    yield invoices, _Counted(_invoices(rng, people))
    yield invoice_lines, _Counted(_invoice_lines(rng, people))
    yield consents, _Counted(_consents(rng, people))
    # Internal data last, so the tables above stay what they were for a seed.
    yield employees, _Counted(_employees())
    yield agent_notes, _Counted(_agent_notes(rng, people))
    yield fraud_flags, _Counted(_fraud_flags(rng, people))
    yield access_log, _Counted(_access_log(rng, people))


def _person(rng: random.Random, i: int) -> dict[str, Any]:
    if i == 1:
        first, last, company = "Max", "Mustermann", "Mustermann Kommunikation e.K."
    else:
        first, last = rng.choice(FIRST), rng.choice(LAST)
        company = f"{last} {rng.choice(['GmbH', 'AG', 'e.K.', 'KG'])}"
    email = DEMO_SUBJECT if i == 1 else f"{first}.{last}.{i}@example.com".lower()
    city = "Bonn" if i == 1 else rng.choice(CITIES)
    return {
        "id": i, "first": first, "last": last, "email": email, "company": company,
        "address": f"Musterstraße {i}, {50000 + i % 50000:05d} {city}",
        "vat": f"DE{100000000 + i:09d}", "phone": _number(rng),
    }


def _number(rng: random.Random) -> str:
    return f"+49151{rng.randrange(10_000_000, 99_999_999)}"


def _ip(rng: random.Random) -> str:
    return f"198.51.100.{rng.randrange(1, 255)}"  # TEST-NET-2: documentation addresses only


def _accounts(rng: random.Random, people: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for p in people:
        yield {
            "id": p["id"], "customer_number": f"K{p['id']:08d}", "email": p["email"],
            "first_name": p["first"], "last_name": p["last"], "phone": p["phone"], "mobile": _number(rng),
            "company_name": p["company"], "company_address": p["address"], "vat_id": p["vat"],
            "password_hash": "$argon2id$v=19$m=65536,t=3,p=4$ZGVtby1zYWx0$" + f"{rng.getrandbits(128):032x}",
            "mfa_enabled": rng.randrange(2), "language": "de" if p["id"] % 3 else "en",
            "created_at": EPOCH - timedelta(days=rng.randrange(30, 900)), "status": "active",
        }


def _invited(rng: random.Random, people: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    n = 0
    for p in people:
        for k in range(1 if p["id"] > 1 else 2):
            n += 1
            first = rng.choice(FIRST)
            yield {
                "id": n, "account_id": p["id"], "email": f"{first.lower()}.team{n}@example.org",
                "first_name": first, "last_name": rng.choice(LAST), "role": ["developer", "billing"][k % 2],
                "invited_at": EPOCH + timedelta(days=rng.randrange(0, 300)),
                "status": rng.choice(["accepted", "pending", "expired"]),
            }


def _payments(rng: random.Random, people: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for p in people:
        yield {
            "id": p["id"], "account_id": p["id"], "kind": "sepa", "holder": f"{p['first']} {p['last']}",
            "iban": f"DE89370400440532{p['id']:06d}", "card_last4": None, "card_expiry": None,
            "sepa_mandate_ref": f"MANDATE-{p['id']:08d}", "sepa_mandate_date": (EPOCH - timedelta(days=200)).date(),
            "created_at": EPOCH - timedelta(days=rng.randrange(1, 500)),
        }


def _share(p: dict[str, Any], per: int, first: int | None) -> int:
    """Usage records of this person: ``first`` for subject 1 when given, else ``per``."""
    return first if first is not None and p["id"] == 1 else per


def _api_usage(rng: random.Random, people: list[dict[str, Any]], per: int,
               first: int | None = None) -> Iterator[dict[str, Any]]:
    n = 0
    for p in people:
        for _ in range(max(1, _share(p, per, first))):
            n += 1
            yield {
                "id": n, "account_id": p["id"], "api_key_id": f"key_{p['id']:05d}",
                "application_id": f"app_{p['id']:05d}", "endpoint": rng.choice(ENDPOINTS),
                "method": rng.choice(["GET", "POST"]), "status_code": rng.choice([200, 200, 201, 400, 401, 429]),
                "called_at": EPOCH + timedelta(seconds=rng.randrange(0, 300 * 86400)), "ip_address": _ip(rng),
            }


def _calls(rng: random.Random, people: list[dict[str, Any]], per: int,
           first: int | None = None) -> Iterator[dict[str, Any]]:
    n = 0
    for p in people:
        for _ in range(_share(p, per, first)):
            n += 1
            outbound = rng.random() < 0.6
            other = _number(rng)
            if outbound and n % 9 == 3:
                other = COUNSELLING_LINE  # a call to a counselling line: never shown (§ 11(2) TDDDG)
            yield {
                "id": n, "account_id": p["id"], "direction": "outbound" if outbound else "inbound",
                "from_number": p["phone"] if outbound else other, "to_number": other if outbound else p["phone"],
                "started_at": EPOCH + timedelta(seconds=rng.randrange(0, 300 * 86400)),
                "duration_s": rng.randrange(0, 3600), "status": rng.choice(CALL_STATUS),
                "location": rng.choice(CITIES), "ip_address": _ip(rng),
                "caller_withheld": not outbound and n % 4 == 1,
            }


def _messages(rng: random.Random, people: list[dict[str, Any]], per: int,
              first: int | None = None) -> Iterator[dict[str, Any]]:
    n = 0
    for p in people:
        for _ in range(_share(p, per, first)):
            n += 1
            yield {
                "id": n, "account_id": p["id"], "channel": rng.choice(["sms", "whatsapp"]),
                "from_number": p["phone"], "to_number": _number(rng),
                "sent_at": EPOCH + timedelta(seconds=rng.randrange(0, 300 * 86400)),
                "status": rng.choice(MSG_STATUS), "segments": rng.randrange(1, 4), "ip_address": _ip(rng),
            }


def _tickets(rng: random.Random, people: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for p in people:
        opened = EPOCH + timedelta(days=rng.randrange(0, 250))
        p["ticket_opened"] = opened  # the internal records about the ticket follow it in time
        yield {
            "id": p["id"], "account_id": p["id"], "subject": "Rückfrage zur Rechnung",
            "body": f"Guten Tag, bitte prüfen Sie die letzte Rechnung. Gruß, {p['first']} {p['last']}",
            "status": "closed", "opened_at": opened, "closed_at": opened + timedelta(days=2),
        }


def _invoices(rng: random.Random, people: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for p in people:
        for month in range(2):
            net = rng.randrange(1000, 50000) / 100
            yield {
                "id": p["id"] * 2 - 1 + month, "account_id": p["id"],
                "invoice_number": f"R-2026-{p['id']:06d}-{month + 1:02d}",
                "issued_on": (EPOCH + timedelta(days=31 * month)).date(),
                "billed_name": p["company"], "billed_address": p["address"], "vat_id": p["vat"],
                "net_amount": net, "vat_amount": round(net * 0.19, 2), "currency": "EUR",
            }


def _invoice_lines(rng: random.Random, people: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    n = 0
    for p in people:
        for month in range(2):
            for item in ("Voice API minutes", "SMS API messages"):
                n += 1
                yield {"id": n, "invoice_id": p["id"] * 2 - 1 + month, "description": item,
                       "quantity": rng.randrange(1, 5000), "unit_price": 0.0125}


def _consents(rng: random.Random, people: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    n = 0
    for p in people:
        for purpose in ("analytics", "marketing"):
            n += 1
            granted = EPOCH + timedelta(days=rng.randrange(0, 100))
            yield {"id": n, "account_id": p["id"], "purpose": purpose, "banner_version": "2025-11",
                   "granted_at": granted, "withdrawn_at": granted + timedelta(days=40) if rng.random() < 0.3 else None}


# The staff who work on customers' data: (name, role, team). Roles are written without gender, so a
# role and a team alone do not point at a person in a small team.
STAFF = [
    ("Sabine Krüger", "Kundenberatung 1st Level", "Kundenservice Geschäftskunden"),
    ("Thomas Neumann", "Kundenberatung 2nd Level", "Kundenservice Geschäftskunden"),
    ("Aylin Demir", "Support Engineer", "Technischer Support API"),
    ("Jan Kowalski", "Fraud Analyst", "Fraud Management"),
    ("Claudia Brandt", "Sachbearbeitung", "Forderungsmanagement"),
    ("Markus Vogel", "Datenschutzkoordination", "Datenschutz"),
    ("Petra Lange", "Qualitätsprüfung", "Qualitätssicherung"),
    ("Daniel Schäfer", "Support Engineer 3rd Level", "Technischer Support API"),
]
AGENT, AGENT_2ND, ENGINEER, FRAUD, DUNNING, PRIVACY, QUALITY, ENGINEER_3RD = range(1, len(STAFF) + 1)
# author, when (hours after the ticket was opened; None: a note on the account, any day), text
NOTES: list[tuple[int, float | None, str]] = [
    (AGENT, 9.5, "Kunde bittet um Erläuterung der SMS-Posten auf der letzten Rechnung. Posten erklärt, "
                 "Kunde ist einverstanden."),
    # Staff write colleagues' names into notes; the export cuts them out (mask: names, AC-25).
    (AGENT_2ND, 33.5, "Gutschrift über 12,40 EUR für doppelt berechnete Nachrichten veranlasst, nach "
                      "Rücksprache mit Claudia Brandt (Forderungsmanagement)."),
    (ENGINEER, 35.5, "Fehler 429 bei /v1/messages: Kunde überschreitet das Limit seines Tarifs. "
                   "Empfehlung: Batch-Versand, Limit-Erhöhung angeboten."),
    (AGENT, None, "Kunde wünscht Rückmeldungen per E-Mail statt Telefon, laut Sabine Krügers Gesprächsnotiz."),
    (AGENT_2ND, None, "Customer asked for English correspondence from now on; noted in the account."),
]
# flag, reason, rule (internal), set by (None: the rule engine, which only asks a person to review), action
FLAGS: list[tuple[str, str, str, int | None, str]] = [
    ("traffic_spike", "Ungewöhnlich viele Verbindungen in kurzer Zeit zu Zielen im Ausland",
     "VEL-07: mehr als 120 Auslandsverbindungen pro Stunde", None, "manual_review"),
    ("payment_return", "Lastschrift von der Bank zurückgegeben (Rücklastschrift)",
     "PAY-02: Rücklastschrift ohne Angabe von Gründen", DUNNING, "prepayment_required"),
    ("irsf_suspect", "Anrufe zu Mehrwertnummern im Ausland mit bekanntem Betrugsmuster",
     "IRSF-11: Zielnetz auf der Liste der Hochrisikonetze, Anteil > 30 %", None, "manual_review"),
    ("login_anomaly", "Anmeldung von einem ungewöhnlichen Ort kurz nach einer Anmeldung in Deutschland",
     "ATO-03: Geschwindigkeit zwischen zwei Anmeldungen > 900 km/h", None, "manual_review"),
    ("sms_pumping", "Auffällig viele Bestätigungs-SMS an fortlaufende Rufnummern",
     "SMS-05: mehr als 50 Verify-Anfragen pro Minute an einen Nummernblock", FRAUD,
     "international_calls_blocked"),
]
# employee, resource, action, purpose, and when: hours after the ticket was opened ("ticket", at midnight),
# after it was closed ("closed"), at the review of the person's first flag ("flag"), or any working day
ACCESS: list[tuple[int, str, str, str, str, float]] = [
    (AGENT, "support_tickets", "view", "support_ticket", "ticket", 9),
    (AGENT, "invoices", "view", "support_ticket", "ticket", 9.2),
    (AGENT_2ND, "invoices", "update", "billing_query", "ticket", 33.2),
    (FRAUD, "call_records", "view", "fraud_review", "flag", 0),
    (ENGINEER, "api_usage", "view", "technical_fault", "ticket", 35),
    (QUALITY, "support_tickets", "view", "quality_audit", "closed", 14 * 24 + 10),
    (PRIVACY, "account", "export", "data_subject_request", "any", 0),
    (DUNNING, "payment_methods", "view", "billing_query", "any", 0),
]


def _working_time(rng: random.Random, day: datetime) -> datetime:
    """A moment on that day between 07:00 and 16:00 UTC (office hours in Germany)."""
    return day.replace(hour=7, minute=0, second=0) + timedelta(seconds=rng.randrange(0, 9 * 3600))


def _any_day(rng: random.Random) -> datetime:
    return _working_time(rng, EPOCH + timedelta(days=rng.randrange(0, 300)))


def _employees() -> Iterator[dict[str, Any]]:
    for i, (name, role, team) in enumerate(STAFF, start=1):
        login = name.lower().replace("ä", "ae").replace("ö", "oe").replace("ü", "ue").replace(" ", ".")
        yield {"id": i, "staff_number": f"P{4711000 + i * 37:08d}", "name": name,
               "email": f"{login}@telekom.example", "role": role, "team": team}


def _agent_notes(rng: random.Random, people: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """Max: every note; the others: none to two. Ticket notes on the person's ticket (its id is theirs)."""
    n = 0
    for p in people:
        chosen = NOTES if p["id"] == 1 else rng.sample(NOTES, rng.randrange(0, 3))
        notes = []
        for author, hours, note in chosen:
            if hours is None:
                notes.append((_any_day(rng), author, False, note))
            else:
                written = p["ticket_opened"] + timedelta(hours=hours, minutes=rng.randrange(0, 30))
                notes.append((written, author, True, note))
        for written, author, on_ticket, note in sorted(notes, key=lambda x: x[0]):
            n += 1
            yield {"id": n, "account_id": p["id"], "ticket_id": p["id"] if on_ticket else None,
                   "author_id": author, "written_at": written, "note": note}


def _fraud_flags(rng: random.Random, people: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """Max: a rule-engine flag cleared after review and a payment return set by staff; the others:
    about one in four has one flag."""
    n = 0
    for p in people:
        chosen = FLAGS[:2] if p["id"] == 1 else ([rng.choice(FLAGS)] if rng.random() < 0.25 else [])
        for k, (flag, reason, rule, set_by, action) in enumerate(chosen):
            n += 1
            # The rule engine fires at any hour; staff set flags during office hours.
            day = EPOCH + timedelta(days=rng.randrange(0, 250) + 30 * k)
            set_at = day + timedelta(seconds=rng.randrange(0, 86400)) if set_by is None else _working_time(rng, day)
            cleared = k == 0 and set_by is None  # the review by a person found a false alarm
            review = _working_time(rng, set_at + timedelta(days=1))  # the next working day
            p.setdefault("reviewed_at", review)  # the fraud review in the access log
            yield {"id": n, "account_id": p["id"], "flag": flag, "reason": reason, "rule": rule,
                   "source": "rule_engine" if set_by is None else "staff", "set_at": set_at, "set_by": set_by,
                   "action": action, "status": "cleared" if cleared else "active",
                   "cleared_at": review + timedelta(minutes=25) if cleared else None}


def _access_log(rng: random.Random, people: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """Max: every kind of access; the others: one to three. Each when its reason arose, oldest first."""
    n = 0
    for p in people:
        chosen = ACCESS if p["id"] == 1 else rng.sample(ACCESS, rng.randrange(1, 4))
        entries = []
        for employee, resource, action, purpose, anchor, hours in chosen:
            jitter = timedelta(hours=hours, minutes=rng.randrange(0, 20))
            if anchor == "ticket":
                at = p["ticket_opened"] + jitter
            elif anchor == "closed":
                at = p["ticket_opened"] + timedelta(days=2) + jitter
            elif anchor == "flag" and "reviewed_at" in p:
                at = p["reviewed_at"] + jitter
            else:
                at = _any_day(rng)
            ticket = p["id"] if anchor in ("ticket", "closed") else None
            entries.append((at, employee, resource, action, purpose, ticket))
        for at, employee, resource, action, purpose, ticket in sorted(entries, key=lambda x: x[0]):
            n += 1
            yield {"id": n, "account_id": p["id"], "accessed_at": at, "employee_id": employee,
                   "resource": resource, "action": action, "purpose": purpose, "ticket_id": ticket}
