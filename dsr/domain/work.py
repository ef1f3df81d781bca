"""Names of the background jobs and their deterministic ids (so a resend is recognised).

The domain schedules work by name through the outbox; ``workers.jobs`` holds the functions.
"""

from __future__ import annotations

import uuid

ADVANCE = "workers.jobs.advance"
COLLECT = "workers.jobs.collect"
ASSEMBLE = "workers.jobs.assemble"
ERASE = "workers.jobs.erase"
NOTIFY = "workers.jobs.notify"


def advance_id(request_id: uuid.UUID, step: str) -> str:
    return f"dsr-advance-{request_id}-{step}"


def collect_id(task_id: uuid.UUID, run: int | str) -> str:
    return f"dsr-collect-{task_id}-{run}"


def assemble_id(request_id: uuid.UUID, run: int | str) -> str:
    return f"dsr-assemble-{request_id}-{run}"


def erase_id(task_id: uuid.UUID, run: int | str) -> str:
    return f"dsr-erase-{task_id}-{run}"


def notify_id(task_id: uuid.UUID, run: int | str) -> str:
    return f"dsr-notify-{task_id}-{run}"


def task_job(action: str, task_id: uuid.UUID, run: int | str) -> tuple[str, str]:
    """The job that runs a task of ``action`` (collect, erase, notify), and its id for this run."""
    if action == "erase":
        return ERASE, erase_id(task_id, run)
    if action == "notify":
        return NOTIFY, notify_id(task_id, run)
    return COLLECT, collect_id(task_id, run)
