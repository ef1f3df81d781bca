"""The connector contract, and the registry that finds a connector by its data map type name.

A connector finds one subject's data in one store and can ``collect``, ``erase``, ``rectify`` and
``restrict`` it; operations a store cannot do raise ``NotSupported``. Every operation must be
idempotent: a retried job runs it again.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol

from dsr.datamap import Store


class NotSupported(Exception):
    """The store cannot do this operation (the task is then planned as manual work)."""


class StoreUnavailable(Exception):
    """The store could not be reached or read; the job will be retried."""


@dataclass(frozen=True)
class Subject:
    """How the data subject is known: identity type (email, phone, ...) -> normalised value."""

    identities: Mapping[str, str]

    @classmethod
    def from_email(cls, email: str) -> Subject:
        return cls({"email": email.strip().lower()})


class TableWriter(Protocol):
    def write(self, rows: Sequence[Sequence[Any]]) -> None: ...

    def close(self) -> None: ...


class TableSink(Protocol):
    """Where collected rows go, table by table, batch by batch (never a whole table in memory)."""

    def open_table(self, name: str, columns: Sequence[str]) -> TableWriter: ...


@dataclass
class CollectResult:
    found: dict[str, int] = field(default_factory=dict)  # table -> rows

    @property
    def total(self) -> int:
        return sum(self.found.values())


class Connector:
    type_name: ClassVar[str]

    def __init__(self, store: Store) -> None:
        self.store = store

    def collect(self, subject: Subject, sink: TableSink) -> CollectResult:
        raise NotSupported(f"{self.type_name} cannot collect")

    def close(self) -> None:
        """Release connections; called when the worker shuts down."""


_REGISTRY: dict[str, type[Connector]] = {}
# Built-in connectors by type name -> module; imported on first use so a missing driver of one
# store type never stops the others from loading.
_BUILTIN = {"sql": "dsr.stores.sql"}


def register(cls: type[Connector]) -> type[Connector]:
    _REGISTRY[cls.type_name] = cls
    return cls


def connector_class(type_name: str) -> type[Connector]:
    if type_name not in _REGISTRY and type_name in _BUILTIN:
        importlib.import_module(_BUILTIN[type_name])
    try:
        return _REGISTRY[type_name]
    except KeyError:
        raise NotSupported(f"no connector for store type {type_name!r}") from None


ConnectorFactory = Callable[[Store], Connector]
