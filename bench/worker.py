"""``python -m bench.worker ...``: ``dsr ...`` (here: ``dsr worker``), then its peak memory as JSON
in the file named by ``BENCH_RSS_FILE``: the process's own high-water mark (VmHWM) and the largest
of its reaped children (RQ's work horses, forked per job: ``RUSAGE_CHILDREN``).

Why not the parent's ``os.wait4``: Linux keeps ``ru_maxrss`` across ``exec``, so the worker would
report the size of the benchmark process that started it.
"""

from __future__ import annotations

import json
import os
import resource
import sys
from pathlib import Path

from bench.harness import peak_rss_kb


def main() -> None:
    target = Path(os.environ.pop("BENCH_RSS_FILE"))
    from dsr.cli import main as dsr

    try:
        dsr.main(args=sys.argv[1:], prog_name="dsr")
    finally:
        own, children = peak_rss_kb(), resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        target.write_text(json.dumps({"own_kb": own, "children_kb": children}), encoding="utf-8")


if __name__ == "__main__":
    main()
