"""Production web serving through gunicorn, started by ``dsr web`` when DSR_ENV=production."""

from __future__ import annotations

import os
from typing import Any

from gunicorn.app.base import BaseApplication


class _App(BaseApplication):
    def __init__(self, options: dict[str, Any]) -> None:
        self.options = options
        super().__init__()

    def load_config(self) -> None:
        for key, value in self.options.items():
            self.cfg.set(key, value)

    def load(self) -> Any:
        from dsr.web.app import create_app

        return create_app()


def serve(bind: str) -> None:
    workers = int(os.environ.get("WEB_CONCURRENCY", str(2 * (os.cpu_count() or 1) + 1)))
    _App({
        "bind": bind,
        "workers": workers,
        "timeout": int(os.environ.get("WEB_TIMEOUT", "30")),
        "accesslog": "-",
        # %(U)s is the path without the query string: signed download links stay out of the logs.
        "access_log_format": '%(h)s %(t)s "%(m)s %(U)s %(H)s" %(s)s %(b)s %(L)ss',
        "forwarded_allow_ips": "*" if os.environ.get("DSR_BEHIND_PROXY") else "127.0.0.1",
    }).run()
