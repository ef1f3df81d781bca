"""The ZIP package handed to the subject, with a manifest of every file's size and SHA-256."""

from __future__ import annotations

import hashlib
import json
import os
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

CHUNK = 1024 * 1024


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


def build_zip(sources: Mapping[str, Path], target: Path, manifest: dict[str, Any]) -> PackedFile:
    """Pack every file under each source folder into ``target`` under the folder's name (streamed),
    plus ``manifest.json`` listing each file's size and SHA-256.

    Written to a temporary name and renamed, so a crash never leaves a half-written package
    under the final name.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(target.suffix + ".partial")
    entries = []
    with zipfile.ZipFile(partial, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=6) as archive:
        for prefix, source in sorted(sources.items()):
            for file in sorted(p for p in source.rglob("*") if p.is_file()):
                relative = file.relative_to(source).as_posix()
                entries.append(_add(archive, file, f"{prefix}/{relative}" if prefix else relative))
        archive.writestr("manifest.json", json.dumps({**manifest, "files": entries}, indent=2, ensure_ascii=False))
    with partial.open("rb") as f:
        os.fsync(f.fileno())
    partial.replace(target)
    return PackedFile(target, target.stat().st_size, sha256_file(target))


def _add(archive: zipfile.ZipFile, file: Path, name: str) -> dict[str, Any]:
    digest = hashlib.sha256()
    info = zipfile.ZipInfo.from_file(file, name)  # keeps the file's time instead of 1980-01-01
    info.compress_type = zipfile.ZIP_DEFLATED
    with file.open("rb") as src, archive.open(info, "w", force_zip64=True) as dst:
        while chunk := src.read(CHUNK):
            digest.update(chunk)
            dst.write(chunk)
    return {"path": name, "size": file.stat().st_size, "sha256": digest.hexdigest()}
