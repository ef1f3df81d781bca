"""Artifacts are encrypted at rest (LC-14): AES-256-GCM in chunks of 1 MiB, each authenticated.

File layout: ``DSRSEAL1`` | 8-byte random prefix | chunks, each ``len (4 bytes) | ciphertext+tag``.
A chunk's nonce is the prefix plus its index; its associated data says whether it is the last one,
so chunks cannot be reordered, dropped or the file cut short without the reader noticing. Every
chunk is verified before its plaintext is handed on, so a download never sends unverified bytes.
"""

from __future__ import annotations

import hashlib
import os
import struct
from collections.abc import Iterator
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

MAGIC = b"DSRSEAL1"
CHUNK = 1024 * 1024
_LAST, _MORE = b"\x01", b"\x00"


class SealBroken(Exception):
    """The stored file was changed, cut short or sealed with another key."""


def storage_key(secret: str) -> bytes:
    """The artifact key, derived from the app's secret (separate from its use for signing links)."""
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=b"dsr artifacts at rest v1").derive(
        secret.encode())


def _nonce(prefix: bytes, index: int) -> bytes:
    return prefix + struct.pack(">I", index)


class SealingWriter:
    """A file-like sink that seals what is written into ``target`` as it comes (one pass, no plaintext
    on disk), and tells the plaintext's size and SHA-256. ``close()`` seals the last chunk, fsyncs
    and renames the file from its temporary name; ``discard()`` removes it instead."""

    def __init__(self, target: Path, key: bytes) -> None:
        self._aead, self._prefix = AESGCM(key), os.urandom(8)
        self.target = target
        target.parent.mkdir(parents=True, exist_ok=True)
        self._partial = target.with_name(target.name + ".partial")
        self._out = self._partial.open("wb")
        self._out.write(MAGIC + self._prefix)
        self._buffer = bytearray()
        self._index = 0
        self._digest = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes | bytearray | memoryview) -> int:
        self._digest.update(data)
        self.size += len(data)
        self._buffer += data
        while len(self._buffer) > CHUNK:  # a chunk is sealed once it is known not to be the last
            self._seal(bytes(self._buffer[:CHUNK]), _MORE)
            del self._buffer[:CHUNK]
        return len(data)

    def flush(self) -> None:
        pass

    def _seal(self, chunk: bytes, flag: bytes) -> None:
        sealed = self._aead.encrypt(_nonce(self._prefix, self._index), chunk, flag)
        self._out.write(struct.pack(">I", len(sealed)) + sealed)
        self._index += 1

    @property
    def sha256(self) -> str:
        return self._digest.hexdigest()

    def close(self) -> None:
        self._seal(bytes(self._buffer), _LAST)
        self._buffer.clear()
        self._out.flush()
        os.fsync(self._out.fileno())
        self._out.close()
        self._partial.replace(self.target)

    def discard(self) -> None:
        self._out.close()
        self._partial.unlink(missing_ok=True)


def seal(source: Path, target: Path, key: bytes) -> None:
    """Encrypt ``source`` into ``target`` (written under a temporary name, then renamed)."""
    writer = SealingWriter(target, key)
    try:
        with source.open("rb") as src:
            while chunk := src.read(CHUNK):
                writer.write(chunk)
    except BaseException:
        writer.discard()
        raise
    writer.close()


def unseal(path: Path, key: bytes) -> Iterator[bytes]:
    """The plaintext, chunk by chunk, each verified before it is yielded."""
    aead = AESGCM(key)
    with path.open("rb") as f:
        head = f.read(len(MAGIC) + 8)
        if not head.startswith(MAGIC) or len(head) != len(MAGIC) + 8:
            raise SealBroken(f"{path.name} is not a sealed dsr artifact")
        prefix, index = head[len(MAGIC):], 0
        while True:
            size = f.read(4)
            if len(size) != 4:
                raise SealBroken(f"{path.name} ends before its last chunk (cut short)")
            sealed = f.read(struct.unpack(">I", size)[0])
            for flag in (_MORE, _LAST):
                try:
                    plain = aead.decrypt(_nonce(prefix, index), sealed, flag)
                except InvalidTag:
                    continue
                yield plain
                if flag == _LAST:
                    if f.read(1):
                        raise SealBroken(f"{path.name} has data after its last chunk")
                    return
                break
            else:
                raise SealBroken(f"chunk {index} of {path.name} does not verify (changed, or another key)")
            index += 1
