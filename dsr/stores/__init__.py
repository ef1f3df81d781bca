"""Store connectors: one module each, behind the interface in ``dsr.stores.base``."""

from dsr.stores.base import (
    CollectResult,
    Connector,
    ConnectorContext,
    NotSupported,
    Pending,
    Progress,
    Refused,
    StoreUnavailable,
    Subject,
    TableSink,
    TableWriter,
    connector_class,
    register,
    validate_store,
)

__all__ = [
    "CollectResult",
    "Connector",
    "ConnectorContext",
    "NotSupported",
    "Pending",
    "Progress",
    "Refused",
    "StoreUnavailable",
    "Subject",
    "TableSink",
    "TableWriter",
    "connector_class",
    "register",
    "validate_store",
]
