"""The ZIP package handed to the subject, with a manifest of every file's size and SHA-256."""

from __future__ import annotations

import hashlib
import json
import os
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from dsr.exports.deflate import DeflatingZipFile
from dsr.exports.protected_zip import aes_archive

CHUNK = 1024 * 1024
# ISA-L's deflate level 1 (dsr.exports.deflate): on the 1M-row subject's CSV and JSON 3.5x the speed
# of zlib's level 1, and 6% smaller (zlib's default level 6 is 12x slower for files a fifth smaller).
# The package is built for every request; it is downloaded a few times at most.
LEVEL = 1
# Already compressed: deflating them again costs time and gains nothing.
STORED_SUFFIXES = frozenset({".mp3", ".m4a", ".aac", ".ogg", ".opus", ".flac", ".mp4", ".mov", ".webm",
                             ".jpg", ".jpeg", ".png", ".gif", ".webp", ".heic", ".zip", ".gz", ".bz2", ".xz",
                             ".zst", ".7z", ".docx", ".xlsx", ".pptx", ".odt"})


@dataclass(frozen=True)
class PackedFile:
    path: Path
    size: int
    sha256: str


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


class PackageWriter:
    """A ZIP written front to back into ``out`` (a file, or a ``SealingWriter`` that encrypts as it
    goes): folders of files, then ``manifest.json`` listing each file's size and SHA-256.

    ``out`` need not be seekable: sizes and CRCs then follow each file (ZIP data descriptors), so
    the package is written in one pass and never read back."""

    def __init__(self, out: IO[bytes], password: str | None = None) -> None:
        if password is None:
            self._archive = DeflatingZipFile(out, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=LEVEL)
        else:  # every member AES-256 encrypted as it is written (protected_zip.py)
            self._archive = aes_archive(out, password, LEVEL)
        self._entries: list[tuple[tuple[str, str], dict[str, Any]]] = []

    def add_folder(self, prefix: str, source: Path) -> None:
        """Every file under ``source``, under ``prefix/`` in the package ("" for the top level). Dot
        files are dsr's notes beside the data (a table's column kinds), never data: left out."""
        for file in sorted(p for p in source.rglob("*") if p.is_file() and not p.name.startswith(".")):
            relative = file.relative_to(source).as_posix()
            entry = _add(self._archive, file, f"{prefix}/{relative}" if prefix else relative)
            self._entries.append(((prefix, relative), entry))

    def finish(self, manifest: dict[str, Any]) -> None:
        # Listed folder by folder, as the folders sort, whatever order they were packed in.
        files = [entry for _key, entry in sorted(self._entries, key=lambda e: e[0])]
        self._archive.writestr("manifest.json", json.dumps({**manifest, "files": files}, indent=2,
                                                           ensure_ascii=False))
        self._archive.close()


def build_zip(sources: Mapping[str, Path], target: Path, manifest: dict[str, Any]) -> PackedFile:
    """Pack every file under each source folder into ``target`` under the folder's name (streamed),
    plus ``manifest.json`` listing each file's size and SHA-256.

    Written to a temporary name and renamed, so a crash never leaves a half-written package
    under the final name.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(target.suffix + ".partial")
    with partial.open("wb") as out:
        writer = PackageWriter(out)
        for prefix, source in sorted(sources.items()):
            writer.add_folder(prefix, source)
        writer.finish(manifest)
        out.flush()
        os.fsync(out.fileno())
    partial.replace(target)
    return PackedFile(target, target.stat().st_size, sha256_file(target))


def _add(archive: zipfile.ZipFile, file: Path, name: str) -> dict[str, Any]:
    digest = hashlib.sha256()
    info = zipfile.ZipInfo.from_file(file, name)  # keeps the file's time instead of 1980-01-01
    if file.suffix.lower() in STORED_SUFFIXES:
        info.compress_type = zipfile.ZIP_STORED
    else:
        info.compress_type = zipfile.ZIP_DEFLATED
        setattr(info, "_compresslevel", LEVEL)  # noqa: B010  (ZipFile.write sets it; open() needs it given)
    size = 0
    with file.open("rb") as src, archive.open(info, "w", force_zip64=True) as dst:
        while chunk := src.read(CHUNK):
            digest.update(chunk)
            dst.write(chunk)
            size += len(chunk)
    return {"path": name, "size": size, "sha256": digest.hexdigest()}
