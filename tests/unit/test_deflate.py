"""Package members are deflated by ISA-L: plain deflate that any unzip reads, with correct CRCs."""

from __future__ import annotations

import io
import subprocess
import zipfile
from pathlib import Path

import pytest
from isal import isal_zlib

from dsr.exports.deflate import DeflatingZipFile, isal_level
from dsr.exports.package import LEVEL, PackageWriter

CSV = b"".join(b"%d,1,inbound,'+4915164734xxx,2026-03-08T16:15:10+00:00,60,failed,Leipzig\n" % i
               for i in range(20_000))


class _Stream(io.RawIOBase):
    """A sink that cannot seek (as the sealing writer): sizes and CRCs follow each member."""

    def __init__(self) -> None:
        self.data = bytearray()

    def writable(self) -> bool:
        return True

    def write(self, b) -> int:  # type: ignore[no-untyped-def,override]
        self.data += b
        return len(b)


def test_members_are_isal_deflate_that_the_standard_library_reads_and_verifies(tmp_path: Path) -> None:
    out = _Stream()
    with DeflatingZipFile(out, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=LEVEL) as archive:
        with archive.open("portal_db/call_records.csv", "w") as member:
            for start in range(0, len(CSV), 1 << 16):
                member.write(CSV[start:start + (1 << 16)])
        archive.writestr("manifest.json", "{}")
    path = tmp_path / "p.zip"
    path.write_bytes(out.data)
    with zipfile.ZipFile(path) as archive:
        assert archive.testzip() is None  # every CRC checks out
        info = archive.getinfo("portal_db/call_records.csv")
        assert info.compress_type == zipfile.ZIP_DEFLATED and info.file_size == len(CSV)
        assert archive.read(info) == CSV
        # The member's bytes are ISA-L's deflate of the data (zlib's level 1 would differ).
        raw = bytes(out.data[info.header_offset:])
        start = 30 + len(info.filename.encode()) + int.from_bytes(raw[28:30], "little")
        packed = raw[start:start + info.compress_size]
        isal = isal_zlib.compressobj(isal_level(LEVEL), isal_zlib.DEFLATED, -15)
        expected = b"".join(isal.compress(CSV[s:s + (1 << 16)]) for s in range(0, len(CSV), 1 << 16)) + isal.flush()
        assert packed == expected
    unzip = subprocess.run(["unzip", "-tq", str(path)], capture_output=True, text=True, check=False) \
        if Path("/usr/bin/unzip").exists() else None
    if unzip is not None:
        assert unzip.returncode == 0, unzip.stdout + unzip.stderr


@pytest.mark.parametrize(("zlib_level", "isal"), [(None, 2), (-1, 2), (0, 0), (1, 1), (3, 3), (6, 3), (9, 3)])
def test_zlib_levels_map_to_the_nearest_isal_level(zlib_level: int | None, isal: int) -> None:
    assert isal_level(zlib_level) == isal


def test_the_package_writer_packs_through_isal(tmp_path: Path) -> None:
    folder = tmp_path / "portal_db"
    folder.mkdir()
    (folder / "call_records.csv").write_bytes(CSV)
    target = tmp_path / "package.zip"
    with target.open("wb") as f:
        package = PackageWriter(f)
        package.add_folder("portal_db", folder)
        package.finish({"reference": "DSR-2026-000001"})
    with zipfile.ZipFile(target) as archive:
        assert archive.testzip() is None
        assert archive.read("portal_db/call_records.csv") == CSV
        assert archive.getinfo("portal_db/call_records.csv").compress_size < len(CSV) / 5
