"""Store connectors: one module each, behind the interface in ``dsr.stores.base``."""

from dsr.stores.base import (
    CollectResult,
    Connector,
    NotSupported,
    StoreUnavailable,
    Subject,
    TableSink,
    connector_class,
    register,
)

__all__ = [
    "CollectResult",
    "Connector",
    "NotSupported",
    "StoreUnavailable",
    "Subject",
    "TableSink",
    "connector_class",
    "register",
]
