"""What the DPO office should know about a request before its answer goes out.

Today one kind: records a store keeps longer than the data map's retention allows
(``dsr.exports.aging``), counted while collecting. The answer states the map's period; records past
it contradict that, and show a deletion that did not happen (Art. 5(1)(e) GDPR).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from dsr.models import Task, TaskAction


def findings(tasks: Iterable[Task]) -> list[dict[str, Any]]:
    out = []
    for task in tasks:
        if task.action == TaskAction.NOTIFY:
            continue  # an Art. 19 notice: its store names a recipient, and it holds no records
        for table, found in sorted(((task.counts or {}).get("past_retention") or {}).items()):
            out.append({
                "kind": "past_retention", "store": task.store, "table": table, "category": found.get("category"),
                "retention": found.get("retention"), "records": found.get("records"), "oldest": found.get("oldest"),
                "limit": found.get("limit"),
                "message": (f"{task.store}/{table}: {found.get('records')} record(s) of this subject are older than "
                            f"the retention rule {found.get('retention')!r} allows (kept until {found.get('limit')}, "
                            f"oldest {found.get('oldest')}). The answer states that rule's period: have them "
                            "deleted and the deletion job checked."),
            })
    return out
