"""A forking worker loads once what every job needs; its work horses start with it."""

from __future__ import annotations

import gc
import os
import sys
import time

from rq import Worker

from dsr import runtime as runtimes
from dsr.queue import DsrWorker, connect, make_queue, preload, warm_connectors
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


def test_a_forking_worker_hides_what_it_preloaded_from_the_cycle_collector(settings, monkeypatch):
    """gc.freeze after the preload: a work horse's (and its report child's) collections never walk
    the inherited modules, WeasyPrint and tables. A re-reflection unfreezes first, so the tables it
    replaces can be collected, and freezes again after."""
    rt = runtimes.build(settings)
    connection = connect(settings)
    worker = DsrWorker([make_queue(settings, connection)], connection=connection, runtime=rt)
    try:
        worker.preload()
        frozen = gc.get_freeze_count()
        assert frozen > 10_000  # modules, WeasyPrint, the reflected tables
        unfrozen: list[int] = []
        monkeypatch.setattr(gc, "unfreeze", lambda real=gc.unfreeze: (real(), unfrozen.append(1))[0])
        monkeypatch.setattr(worker, "_warmed", time.monotonic() - DsrWorker.REFLECT_SECONDS - 1)
        monkeypatch.setattr(Worker, "execute_job", lambda self, job, queue: None)  # the job itself: not here
        worker.execute_job(None, None)  # type: ignore[arg-type]
        assert unfrozen == [1] and gc.get_freeze_count() >= frozen * 0.9
    finally:
        gc.unfreeze()  # the test process itself goes on collecting as before
        rt.close()
