"""Manual stores: where no system can be asked (a paper archive, a tool without an API), the task
waits for a person. The data map says what to do; the DPO office completes the task through the
API with a note and files as evidence (``POST .../tasks/<id>/complete``), within the store's deadline.
"""

from __future__ import annotations

from typing import Any

from marshmallow import RAISE, Schema, fields, validate

from dsr.datamap.schema import Localized
from dsr.stores.base import CollectResult, Connector, Pending, Progress, Subject, TableSink, register


class _Connection(Schema):
    class Meta:
        unknown = RAISE

    # What the person must do, in German and English (shown with the task).
    instructions = Localized(required=True)
    contact = fields.String(load_default=None, validate=validate.Length(max=200))  # who holds the archive


@register
class ManualConnector(Connector):
    type_name = "manual"
    connection_schema = _Connection

    def collect(self, subject: Subject, sink: TableSink, progress: Progress | None = None) -> CollectResult:
        instructions: Any = self.store.connection.get("instructions") or {}
        # Nothing to poll; one check when the store's deadline is up fails the task if nobody acted.
        days = self.store.deadline_days
        raise Pending(f"manual:{self.store.name}", days * 86400 + 60 if days else None,
                      f"waiting for a person: {instructions.get('en', '')}".strip())
