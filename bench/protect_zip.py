"""What password protection adds to packing: the same folder packed plain and as AES-256.

    .venv/bin/python -m bench.protect_zip --rows 1000000 --files 1000

Writes a CSV of ``--rows`` call-record-like rows (about 73 bytes each) into a scratch folder and
packs it with ``PackageWriter`` (deflate level 1, as a package is packed) into a sealed file, once
plain and once with a password (AES-CTR + HMAC-SHA1 on the compressed stream, one pass). Reports
both times and the peak RSS of this process, which must not grow with the member's size; then the
same for ``--files`` small files (WinZip AES derives a key per member: PBKDF2-HMAC-SHA1, 1,000
rounds). Not part of ``bench.run``: it needs no database.
"""

from __future__ import annotations

import argparse
import os
import resource
import tempfile
import time
from pathlib import Path
from typing import IO, cast

from dsr.exports.package import PackageWriter
from dsr.exports.protected_zip import new_password
from dsr.exports.sealed import SealingWriter


def _pack(source: Path, target: Path, password: str | None) -> tuple[float, int]:
    started = time.perf_counter()
    sealed = SealingWriter(target, os.urandom(32))
    package = PackageWriter(cast(IO[bytes], sealed), password)
    package.add_folder("portal_db", source)
    package.finish({"reference": "BENCH"})
    sealed.close()
    return time.perf_counter() - started, sealed.size


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--files", type=int, default=1_000)
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
        _pack(source, Path(scratch) / "warm.sealed", None)  # page cache warm for both
        plain_s, plain_size = _pack(source, Path(scratch) / "plain.sealed", None)
        aes_s, aes_size = _pack(source, Path(scratch) / "aes.sealed", new_password())
        many = Path(scratch) / "attachments"
        many.mkdir()
        for i in range(args.files):
            (many / f"attachment-{i}.txt").write_bytes(os.urandom(200))
        few_plain_s, _ = _pack(many, Path(scratch) / "many-plain.sealed", None)
        few_aes_s, _ = _pack(many, Path(scratch) / "many-aes.sealed", new_password())
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"rows {args.rows:,}; CSV {csv_bytes / 1e6:.1f} MB; plain ZIP {plain_size / 1e6:.1f} MB in {plain_s:.2f} s; "
          f"AES-256 ZIP {aes_size / 1e6:.1f} MB in {aes_s:.2f} s ({aes_s / plain_s:.2f}x); peak RSS {peak_mb:.0f} MB")
    print(f"{args.files:,} small files: plain {few_plain_s:.2f} s, AES-256 {few_aes_s:.2f} s "
          f"({(few_aes_s - few_plain_s) / max(args.files, 1) * 1000:.1f} ms more per file)")


if __name__ == "__main__":
    main()
