"""A forking worker loads once what every job needs; its work horses start with it."""

from __future__ import annotations

import os
import sys

from dsr import runtime as runtimes
from dsr.queue import preload, warm_connectors
from dsr.stores.sql import SqlConnector


def test_preload_warms_the_report_and_reflects_sql_stores(settings):
    rt = runtimes.build(settings)
    try:
        preload(rt)
        assert "weasyprint" in sys.modules and "workers.jobs" in sys.modules
        portal = rt.connector("portal_db")
        assert isinstance(portal, SqlConnector) and "call_records" in portal._tables
        # A work horse (another pid): the parent's connections are left alone, the tables are kept.
        rt.pid = -1
        rt.after_fork()
        assert rt.pid == os.getpid() and rt.connector("portal_db") is portal and portal._tables
        # Refreshed: reflected anew (a store's changed schema is seen without a restart).
        tables = portal._tables
        warm_connectors(rt, fresh=True)
        assert portal._tables and portal._tables is not tables
    finally:
        rt.close()
