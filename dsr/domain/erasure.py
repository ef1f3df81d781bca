"""What an erasure request (Art. 17 GDPR) does to each table of each store: the plan a DPO approves.

The data map decides, never code: a table's own ``erasure:`` (delete, null fields, retain until a
retention rule ends, ask the processor, a person does it) where it has one, else its category's
policy (``on_request`` erased; ``after_contract`` erased only once the subject's contract has ended;
``retained_until_expiry`` kept and restricted under a statutory duty; ``not_applicable`` not the
subject's data to erase). Each step carries the reason a subject reads, the provision that keeps
data and the rule whose end frees it, so the preview and the confirmation letter say why.

Pure: no database, no connector instance (connector classes say which stores their erasure reads).
``dsr.stores.base.TableErasure`` is what a connector receives.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from dsr.datamap.model import DataMap, Erasure, Localized, Store, Table
from dsr.stores.base import NotSupported, TableErasure, connector_class

# How a store carries out its part: by the connector's erase (set-based), by asking the processor, or
# by a person with evidence.
BY_CONNECTOR, BY_PROCESSOR, BY_HAND = "connector", "processor", "manual"

# Why data is kept, when the map gives no reason of its own (the category's policy says it).
_KEPT: Mapping[str, Localized] = {
    "after_contract": {"de": "wird für die Erfüllung Ihres laufenden Vertrags benötigt (Art. 17 Abs. 1 lit. a, "
                             "Art. 6 Abs. 1 lit. b DSGVO); nach Vertragsende gelöscht, wenn die angegebene "
                             "Frist abläuft",
                       "en": "needed to perform your contract while it runs (Art. 17(1)(a), Art. 6(1)(b) GDPR); "
                             "erased after the contract has ended, when the period stated runs out"},
    "retained_until_expiry": {"de": "gesetzliche Aufbewahrungspflicht (Art. 17 Abs. 3 lit. b DSGVO); bis zu "
                                    "ihrem Ende eingeschränkt und danach gelöscht",
                              "en": "kept under a statutory retention duty (Art. 17(3)(b) GDPR); restricted until "
                                    "it ends, then erased"},
    "not_applicable": {"de": "keine Daten über Sie, sondern über unsere Mitarbeitenden",
                       "en": "not data about you but about our staff"},
}


@dataclass(frozen=True)
class Step:
    """One table's part in an erasure. ``action`` is what the connector does (None where the processor
    or a person does the store's part); ``kept`` says why records stay, ``provision`` under which law
    and ``until`` the retention rule whose end frees them."""

    store: str
    table: str
    category: str
    method: str  # delete | null | retain | processor | manual
    action: TableErasure | None
    kept: Localized | None = None
    provision: str | None = None
    until: str | None = None


@dataclass(frozen=True)
class StorePlan:
    store: str
    by: str  # connector | processor | manual
    steps: tuple[Step, ...]

    def actions(self) -> dict[str, TableErasure]:
        """The connector's plan: table -> what to do (tables a connector does not handle are left out)."""
        return {s.table: s.action for s in self.steps if s.action is not None}

    @property
    def changes_anything(self) -> bool:
        return self.by != BY_CONNECTOR or any(s.method in ("delete", "null") for s in self.steps)


def plan(datamap: DataMap, *, contract_ended: bool) -> dict[str, StorePlan]:
    """The erasure of every store of the map, for a subject whose contract has (not) ended."""
    return {name: _store_plan(datamap, store, contract_ended) for name, store in datamap.stores.items()}


def _store_plan(datamap: DataMap, store: Store, contract_ended: bool) -> StorePlan:
    by = {"processor": BY_PROCESSOR, "manual": BY_HAND}.get(store.connector, BY_CONNECTOR)
    steps = tuple(_step(datamap, store, table, contract_ended, by) for table in store.tables.values())
    if by == BY_CONNECTOR and any(s.method in (BY_PROCESSOR, BY_HAND) for s in steps):
        by = BY_HAND  # a table the map says a person erases makes the store's part a person's
    return StorePlan(store.name, by, steps)


def _step(datamap: DataMap, store: Store, table: Table, contract_ended: bool, by: str) -> Step:
    category = datamap.categories[table.category]
    own, policy = table.erasure, category.erasure
    step = functools.partial(Step, store.name, table.name, category.id)
    if by == BY_HAND:
        return step(method=by, action=None)
    # A processor is asked with the same plan as a connector: it carries out "delete everything" or
    # "keep everything" and refuses a partial plan (then a person agrees it with the processor).
    if policy == "not_applicable":
        return step(method="retain", action=TableErasure("retain"), kept=_reason(own, policy))
    if policy == "retained_until_expiry" or (own is not None and own.method == "retain"):
        # The table's own rule wins (e.g. an account kept until 30 days after the contract ends): the
        # retention register computes the date from the rule's anchor.
        return step(method="retain", action=TableErasure("retain"), kept=_reason(own, policy),
                    provision=category.statutory_retention,
                    until=own.until if own is not None and own.until else category.retention)
    if policy == "after_contract" and not contract_ended:
        return step(method="retain", action=TableErasure("retain"), kept=_reason(None, policy),
                    until=category.retention)
    if own is not None and own.method in ("null", "pseudonymise"):
        # Pseudonymising is not built: the fields are emptied instead, which erases more, never less.
        return step(method="null", action=TableErasure("null", own.fields, dict(own.replacements)))
    if own is not None and own.method in ("processor", "manual"):
        return step(method=own.method, action=None)
    return step(method="delete", action=TableErasure("delete"))


def _reason(own: Erasure | None, policy: str) -> Localized | None:
    return own.reason if own is not None and own.reason else _KEPT.get(policy)


def waits_for(datamap: DataMap) -> dict[str, list[str]]:
    """Store -> the stores whose erasure must end before it starts: those that read it (a files store
    reads the database that indexes its files, which must still list them)."""
    after: dict[str, list[str]] = {name: [] for name in datamap.stores}
    for name, store in datamap.stores.items():
        try:
            reads = connector_class(store.connector).reads_from(store)
        except NotSupported:
            continue  # a connector that cannot load reads nothing (and its store fails on its own)
        for other in reads:
            if other in after and other != name:
                after[other].append(name)
    return after


def sequence(datamap: DataMap) -> list[str]:
    """The stores in an order that erases each after the stores that read it (``waits_for``)."""
    after, order = waits_for(datamap), list[str]()
    while len(order) < len(after):
        ready = [n for n in after if n not in order and set(after[n]) <= set(order)]
        order.extend(ready or [n for n in after if n not in order])  # a cycle cannot be; never loop forever
    return order


def decoded(plan: Mapping[str, Mapping[str, Any]]) -> dict[str, TableErasure]:
    """A store's plan as kept in JSON (a task's checkpoint, a suppression entry): table -> what to do."""
    return {table: TableErasure(step["method"], tuple(step.get("fields") or ()), dict(step.get("replacements") or {}))
            for table, step in plan.items()}
