"""A password-protected package: the ZIP re-written as WinZip AES-256 (AE-2), and its password.

WinZip AES is what 7-Zip, WinZip, Keka, The Unarchiver and most archivers open; classic ZipCrypto
is broken and is never used. pyzipper writes it: a fork of CPython's zipfile that compresses,
encrypts (AES-CTR) and authenticates (HMAC-SHA1) a member chunk by chunk as it is written, so
memory does not grow with a member's size. AE-2 stores no CRC of the plain data, so nothing about
the content leaks outside the encryption.

The password is generated here (``new_password``) and stored only sealed (``seal_password``):
AES-256-GCM under a key derived from the artifact key by HKDF, bound to the artifact's id so a
sealed password cannot be moved to another artifact's row.
"""

from __future__ import annotations

import math
import os
import secrets
import uuid
from pathlib import Path
from typing import IO, Any

import pyzipper
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from dsr.exports.deflate import IsalMember, StdlibInfoAccepting

# Letters and digits that cannot be mistaken for one another when read out or written down
# (no 0/o, 1/l/i): 31 symbols, about 4.95 bits each.
ALPHABET = "23456789abcdefghjkmnpqrstuvwxyz"
GROUPS, GROUP_SIZE = 6, 4  # 24 symbols: about 118.9 bits


class PasswordUnreadable(Exception):
    """A sealed password does not open: changed, moved to another row, or another secret key."""


def new_password() -> str:
    """A random password in groups of four, e.g. ``k7dq-x2mf-9rta-bn4e-wh3s-c8pz`` (~119 bits)."""
    return "-".join("".join(secrets.choice(ALPHABET) for _ in range(GROUP_SIZE)) for _ in range(GROUPS))


def password_bits() -> float:
    return GROUPS * GROUP_SIZE * math.log2(len(ALPHABET))


class _AesArchive(StdlibInfoAccepting, pyzipper.AESZipFile):
    """pyzipper's AES archive, deflating with ISA-L (``dsr.exports.deflate``), that also takes the
    standard library's ``ZipInfo``: code written for ``zipfile.ZipFile`` (``archive.open(info, "w")``,
    ``writestr``) writes encrypted members."""

    zipwritefile_cls = IsalMember


def aes_archive(out: Path | IO[bytes], password: str, compresslevel: int | None = None) -> Any:
    """A ZIP open for writing whose every member is AES-256 encrypted (AE-2) with ``password``.

    ``out`` may be a path or a stream that cannot seek (sizes then follow each member); members are
    compressed, encrypted and authenticated chunk by chunk as they are written."""
    archive = _AesArchive(out, "w", compression=pyzipper.ZIP_DEFLATED, compresslevel=compresslevel,
                          encryption=pyzipper.WZ_AES, encryption_kwargs={"nbits": 256})
    archive.setpassword(password.encode())
    return archive


def _password_key(seal_key: bytes) -> bytes:
    # A key of its own: the artifact key's GCM nonces and these never share a key.
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=b"dsr package passwords v1").derive(seal_key)


def _context(artifact_id: uuid.UUID) -> bytes:
    return b"dsr package password|" + artifact_id.bytes


def seal_password(password: str, seal_key: bytes, artifact_id: uuid.UUID) -> bytes:
    """``nonce (12 bytes) | AES-256-GCM(password)``, bound to the artifact's id."""
    nonce = os.urandom(12)
    return nonce + AESGCM(_password_key(seal_key)).encrypt(nonce, password.encode(), _context(artifact_id))


def unseal_password(sealed: bytes, seal_key: bytes, artifact_id: uuid.UUID) -> str:
    try:
        return AESGCM(_password_key(seal_key)).decrypt(sealed[:12], sealed[12:], _context(artifact_id)).decode()
    except (InvalidTag, ValueError) as exc:
        raise PasswordUnreadable(f"the password of artifact {artifact_id} does not open "
                                 "(changed, or DSR_SECRET_KEY changed since the package was built)") from exc
