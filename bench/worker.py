"""``python -m bench.worker ...``: ``dsr ...`` (here: ``dsr worker`` or ``dsr web``), then its peak
memory as JSON in the file named by ``BENCH_RSS_FILE``: the process's own high-water mark (VmHWM)
and the largest of its reaped children (RQ's work horses, forked per job, or gunicorn's workers:
``RUSAGE_CHILDREN``).

Why not the parent's ``os.wait4``: Linux keeps ``ru_maxrss`` across ``exec``, so the worker would
report the size of the benchmark process that started it.

With ``BENCH_GATE=<file>`` the process imports ``dsr.cli`` and what ``dsr worker`` needs, writes
``<file>.ready.<pid>`` and waits for ``<file>`` to exist before it starts: several workers then
begin at one moment, so a timing of many requests measures their work, not how long Python takes
to start four processes on two cores.
"""

from __future__ import annotations

import json
import os
import resource
import sys
import time
from pathlib import Path

from bench.harness import peak_rss_kb

GATE_POLL = 0.01  # seconds


def main() -> None:
    target = Path(os.environ.pop("BENCH_RSS_FILE"))
    gate = os.environ.pop("BENCH_GATE", "")
    from dsr.cli import main as dsr

    if gate:
        # What `dsr worker` imports first anyway, so the clock starts with the work, not with imports.
        import importlib

        for module in ("dsr.queue", "dsr.runtime"):
            importlib.import_module(module)

        Path(f"{gate}.ready.{os.getpid()}").touch()
        while not Path(gate).exists():
            time.sleep(GATE_POLL)
    try:
        dsr.main(args=sys.argv[1:], prog_name="dsr")
    finally:
        own, children = peak_rss_kb(), resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        target.write_text(json.dumps({"own_kb": own, "children_kb": children}), encoding="utf-8")


if __name__ == "__main__":
    main()
