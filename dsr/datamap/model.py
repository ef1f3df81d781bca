"""The data map as plain, immutable objects: what the domain, connectors and reports read."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import date
from pathlib import Path
from typing import Any

Localized = Mapping[str, str]  # {"de": ..., "en": ...}
GERMAN_SPEAKING = ("DE", "AT", "CH", "LI")

# ${NAME} or ${NAME:-default} in a store's connection (docs/datamap.md).
VARIABLE = re.compile(r"\$\{(?P<name>[A-Z0-9_]+)(?::-(?P<default>[^}]*))?\}")


class UnsetVariable(LookupError):
    """A store's connection names an environment variable that this process does not have."""

    def __init__(self, store: str, missing: Mapping[str, list[str]]) -> None:
        self.store, self.missing = store, dict(missing)  # connection key -> variable names
        names = sorted({n for names in missing.values() for n in names})
        where = ", ".join(f"connection.{key}" for key in missing)
        super().__init__(f"store {store}: the environment variable{'s' if len(names) > 1 else ''} "
                         f"{', '.join(names)} (in {where}) {'are' if len(names) > 1 else 'is'} not set "
                         "in this process")


def expand(value: str, environ: Mapping[str, str], missing: list[str] | None = None) -> str:
    """``value`` with its variables replaced. An unset (or empty) variable without a default is added
    to ``missing`` and left as written; without ``missing`` it raises KeyError."""

    def sub(match: re.Match[str]) -> str:
        name, default = match["name"], match["default"]
        if environ.get(name):
            return environ[name]
        if default is not None:
            return default
        if missing is None:
            raise KeyError(name)
        missing.append(name)
        return match[0]

    return VARIABLE.sub(sub, value)


@dataclass(frozen=True)
class Contact:
    name: str
    address: str | None = None
    email: str | None = None
    phone: str | None = None
    url: str | None = None


@dataclass(frozen=True)
class Authority(Contact):
    scope: Localized = field(default_factory=dict)


@dataclass(frozen=True)
class Controller(Contact):
    dpo: Contact = field(default_factory=lambda: Contact(""))


@dataclass(frozen=True)
class Purpose:
    id: str
    legal_basis: str
    description: Localized
    legitimate_interest: Localized | None = None


# Anchors a record's own date decides (``erasure: dated_by``): the end of its calendar year, or the day
# itself (collected, invoice sent, ticket closed, flag cleared; a consent's end, to the end of that year).
# Any other anchor (``contract_end``, a customer's setting, ...) is not known from a date in the record.
DATED_ANCHORS = frozenset({"eoy", "collection", "invoice_dispatch", "ticket_closure", "consent_end_eoy",
                           "flag_cleared"})


@dataclass(frozen=True)
class RetentionRule:
    id: str
    anchor: str | None
    duration: str | None
    description: Localized
    holds: tuple[str, ...] = ()
    reference: str | None = None


@dataclass(frozen=True)
class Notify:
    via: str  # store | email | manual | none
    store: str | None = None
    email: str | None = None
    reason: Localized | None = None
    locale: str | None = None  # the language of an e-mailed notice (de, en); None: by the recipient's country

    def language(self, country: str) -> str:
        """The language the recipient reads its notice in: ``locale``, else German for a recipient
        established where German is the official language, else English."""
        return self.locale or ("de" if country in GERMAN_SPEAKING else "en")


@dataclass(frozen=True)
class Recipient:
    id: str
    name: str
    role: str
    country: str
    notify: Notify
    address: str | None = None
    description: Localized | None = None


@dataclass(frozen=True)
class Transfer:
    recipient: str
    country: str
    safeguard: Localized


@dataclass(frozen=True)
class Category:
    id: str
    title: Localized
    purposes: tuple[str, ...]
    source: Localized
    retention: str
    recipients: tuple[str, ...]
    transfers: tuple[Transfer, ...]
    portable: bool
    erasure: str
    authority: str
    statutory_retention: str | None = None
    automated_decisions: Localized | None = None
    stored: bool = True  # False: the controller keeps nothing of it (no store may hold it)


@dataclass(frozen=True)
class Case:
    """Records matching the condition are disclosed as this case says (AC-20..AC-23: a withheld
    caller number, the subject's own number, a counselling line, full numbers on request)."""

    disclose: str
    mask: str | None
    reason: Localized
    column: str | None = None
    equals: Any = None
    values: tuple[str, ...] | None = None  # in_list, resolved to its values
    request: str | None = None

    def applies(self, options: Mapping[str, Any]) -> bool:
        """Whether the request part of the condition holds (rows are checked by the export paths)."""
        return self.request is None or bool(options.get(self.request))


@dataclass(frozen=True)
class FieldRule:
    name: str
    category: str
    disclose: str = "export"  # export | mask | omit
    mask: str | None = None
    reason: Localized | None = None
    description: Localized | None = None
    cases: tuple[Case, ...] = ()
    # mask "names": the column ("table.column", same store) whose values are cut out of this text
    names_from: str | None = None
    label: Localized | None = None  # the column's name for a subject; the raw name where none is given


@dataclass(frozen=True)
class Erasure:
    method: str
    fields: tuple[str, ...] = ()
    reason: Localized | None = None
    until: str | None = None
    replacements: Mapping[str, Any] = field(default_factory=dict)  # column -> value written instead of NULL
    # method retain: the column with the date the rule's anchor counts from (an invoice's date, a call's
    # start), so the retention register knows when each kept record may be erased. None: undated.
    dated_by: str | None = None


@dataclass(frozen=True)
class Table:
    """A set of records in a store; ``options`` are the connector's own settings (key, references, ...)."""

    name: str
    category: str
    fields: Mapping[str, FieldRule]
    options: Mapping[str, Any]
    erasure: Erasure | None = None
    description: Localized | None = None
    label: Localized | None = None  # the table's name for a subject; the raw name where none is given
    collected_at: str | None = None  # the column with each record's collection time

    def rule(self, column: str) -> FieldRule:
        """The rule of a column; one the map does not list is exported under the table's category."""
        return self.fields.get(column) or FieldRule(column, self.category)


@dataclass(frozen=True)
class Store:
    name: str
    connector: str
    description: Localized
    connection: Mapping[str, Any]
    identities: Mapping[str, Mapping[str, Any]]
    tables: Mapping[str, Table]
    recipient: str | None = None
    deadline_days: int | None = None
    label: Localized | None = None  # the system's name for a subject; its description where none is given
    # Connection key -> the variables without a default it names (the loader records them). The
    # values in ``connection`` are as written: a variable is read only where it is used (``resolved``,
    # ``setting``), so a process needs only the secrets of what it does (web: no database passwords).
    variables: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    # Where the variables come from: the environment given to the loader, else os.environ when read.
    environ: Mapping[str, str] | None = field(default=None, repr=False, compare=False)

    def environment(self, environ: Mapping[str, str] | None) -> Mapping[str, str]:
        return environ if environ is not None else self.environ if self.environ is not None else os.environ

    def setting(self, key: str, default: Any = None, environ: Mapping[str, str] | None = None) -> Any:
        """One connection value with its variables read now; UnsetVariable names what is missing."""
        value = self.connection.get(key, default)
        if not isinstance(value, str):
            return value
        missing: list[str] = []
        value = expand(value, self.environment(environ), missing)
        if missing:
            raise UnsetVariable(self.name, {key: missing})
        return value

    def resolved(self, environ: Mapping[str, str] | None = None) -> Store:
        """This store with every connection value's variables read now (to build its connector)."""
        env = self.environment(environ)
        connection, missing = {}, {}
        for key, value in self.connection.items():
            names: list[str] = []
            connection[key] = expand(value, env, names) if isinstance(value, str) else value
            if names:
                missing[key] = names
        if missing:
            raise UnsetVariable(self.name, missing)
        return replace(self, connection=connection)


@dataclass(frozen=True)
class Contract:
    """How a store tells whether the subject's contract has ended (Art. 17(1)(a): ``after_contract``
    data is erased only then): the subject's records in ``store.table`` all hold one of ``ended`` in
    ``column``. A subject with no such record has no contract."""

    store: str
    table: str
    column: str
    ended: tuple[str, ...]


@dataclass(frozen=True)
class DataMap:
    version: str
    date: date
    controller: Controller
    authorities: Mapping[str, Authority]
    purposes: Mapping[str, Purpose]
    retention: Mapping[str, RetentionRule]
    recipients: Mapping[str, Recipient]
    categories: Mapping[str, Category]
    stores: Mapping[str, Store]
    notice: Mapping[str, Any] = field(default_factory=dict)
    contract: Contract | None = None
    source: Path | None = None
    lines: Mapping[str, int] = field(default_factory=dict, repr=False, compare=False)

    def where(self, path: str) -> str:
        """``file:line: path`` for messages about a part of the map."""
        line = _nearest_line(self.lines, path)
        prefix = f"{self.source or '<data map>'}" + (f":{line}" if line else "")
        return f"{prefix}: {path}"


def _nearest_line(lines: Mapping[str, int], path: str) -> int | None:
    while path:
        if path in lines:
            return lines[path]
        path = path.rpartition(".")[0]
    return None
