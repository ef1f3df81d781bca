"""What password protection adds to a package: the plain ZIP's build vs its AES-256 re-write.

    .venv/bin/python -m bench.protect_zip --rows 1000000

Writes a CSV of ``--rows`` call-record-like rows (about 73 bytes each) into a scratch folder, packs
it with ``build_zip`` as a package is packed, then times ``protect`` (decompress, deflate again,
AES-CTR + HMAC, one member at a time) and reports the peak RSS of this process, which must not
grow with the member's size. Not part of ``bench.run``: it needs no database.
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time
from pathlib import Path

from dsr.exports.package import build_zip
from dsr.exports.protected_zip import new_password, protect


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="dsr-protect-") as scratch:
        source = Path(scratch) / "store"
        source.mkdir()
        with (source / "calls.csv").open("w", encoding="utf-8") as f:
            f.write("id,caller,callee,started_at,seconds,status\n")
            for i in range(args.rows):
                f.write(f"{i},+4922199{i % 100000:05d},+49171{(i * 7919) % 10**7:07d},"
                        f"2026-{1 + i % 12:02d}-{1 + i % 28:02d}T{i % 24:02d}:{i % 60:02d}:{i * 7 % 60:02d}+00:00,"
                        f"{i % 3600},{('answered', 'missed', 'busy')[i % 3]}\n")
        csv_bytes = (source / "calls.csv").stat().st_size
        started = time.perf_counter()
        plain = build_zip({"portal_db": source}, Path(scratch) / "package.zip", {"reference": "BENCH"})
        built = time.perf_counter() - started
        started = time.perf_counter()
        protected = protect(plain, new_password())
        protecting = time.perf_counter() - started
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"rows {args.rows:,}; CSV {csv_bytes / 1e6:.1f} MB; plain ZIP {plain.size / 1e6:.1f} MB in {built:.2f} s; "
          f"AES-256 re-write {protected.size / 1e6:.1f} MB in {protecting:.2f} s "
          f"({protecting / built:.2f}x the plain build); peak RSS {peak_mb:.0f} MB")


if __name__ == "__main__":
    main()
