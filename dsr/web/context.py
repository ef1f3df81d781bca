"""What the app factory wires together, reachable from a request."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, cast

from flask import current_app

from dsr.runtime import Runtime

if TYPE_CHECKING:
    from rq import Queue

    from dsr.queue import EmbeddedWorker, Sweeper


@dataclass
class WebContext:
    runtime: Runtime
    queue: Queue
    worker: EmbeddedWorker | None = None
    sweeper: Sweeper | None = None


def web_context() -> WebContext:
    return cast(WebContext, current_app.extensions["dsr"])


def runtime() -> Runtime:
    return web_context().runtime
