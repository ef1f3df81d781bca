"""The AES-256 re-write of a package and its password (dsr/exports/protected_zip.py)."""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import tracemalloc
import uuid
import zipfile

import pytest
import pyzipper

from dsr.exports.package import PackageWriter
from dsr.exports.protected_zip import (
    PasswordUnreadable,
    aes_archive,
    new_password,
    password_bits,
    seal_password,
    unseal_password,
)

MiB = 1024 * 1024


def test_passwords_are_strong_readable_and_fresh():
    assert password_bits() >= 100
    passwords = {new_password() for _ in range(2000)}
    assert len(passwords) == 2000
    for password in passwords:
        assert re.fullmatch(r"([2-9a-hjkmnp-z]{4}-){5}[2-9a-hjkmnp-z]{4}", password), password
    # Every symbol of the alphabet turns up, none outside it: the choice is uniform, not a subset.
    assert set("".join(passwords).replace("-", "")) == set("23456789abcdefghjkmnpqrstuvwxyz")


class _Stream:
    """A sink that cannot seek or tell, like the sealing writer a package is streamed into."""

    def __init__(self) -> None:
        self.data = bytearray()

    def write(self, data: bytes) -> int:
        self.data += data
        return len(data)

    def flush(self) -> None:
        pass


class _Counting:
    """A sink that only counts what it is given."""

    def __init__(self) -> None:
        self.size = 0

    def write(self, data: bytes) -> int:
        self.size += len(data)
        return len(data)

    def flush(self) -> None:
        pass


def test_a_package_written_with_a_password_opens_only_with_it_and_its_manifest_verifies(tmp_path):
    source = tmp_path / "store"
    (source / "files").mkdir(parents=True)
    (source / "accounts.csv").write_text("id;email\n1;max@example.com\n", encoding="utf-8")
    (source / "files" / "voicemail.mp3").write_bytes(os.urandom(100_000))
    password, out = new_password(), _Stream()

    package = PackageWriter(out, password)  # type: ignore[arg-type]  (a sink that cannot seek)
    package.add_folder("portal", source)
    package.finish({"reference": "DSR-1"})

    data = bytes(out.data)
    assert b"max@example.com" not in data and b"DSR-1" not in data
    with pyzipper.AESZipFile(io.BytesIO(data)) as archive:
        with pytest.raises(RuntimeError):
            archive.read("manifest.json", pwd=b"wrong")
        archive.setpassword(password.encode())
        assert archive.namelist() == ["portal/accounts.csv", "portal/files/voicemail.mp3", "manifest.json"]
        assert archive.getinfo("portal/files/voicemail.mp3").compress_type == zipfile.ZIP_STORED  # stays stored
        manifest = json.loads(archive.read("manifest.json"))
        assert manifest["reference"] == "DSR-1" and len(manifest["files"]) == 2
        for entry in manifest["files"]:
            assert hashlib.sha256(archive.read(entry["path"])).hexdigest() == entry["sha256"]


def test_a_large_member_is_encrypted_chunk_by_chunk_without_holding_it_in_memory(tmp_path):
    source = tmp_path / "store"
    source.mkdir()
    with (source / "recording.bin").open("wb") as f:  # incompressible: every byte goes through the cipher
        for _ in range(48):
            f.write(os.urandom(MiB))
    out = _Counting()

    tracemalloc.start()
    try:
        package = PackageWriter(out, new_password())  # type: ignore[arg-type]
        package.add_folder("media", source)
        package.finish({})
        _current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    assert out.size > 48 * MiB
    assert peak < 12 * MiB, f"peak {peak / MiB:.1f} MiB while encrypting a 48 MiB member"


def test_code_written_for_zipfile_writes_encrypted_members_into_a_stream(tmp_path):
    media = tmp_path / "voicemail.mp3"
    media.write_bytes(os.urandom(300_000))
    out, password = _Stream(), new_password()
    archive = aes_archive(out, password, compresslevel=1)
    info = zipfile.ZipInfo.from_file(media, "media/voicemail.mp3")  # the standard library's ZipInfo
    info.compress_type = zipfile.ZIP_STORED
    with media.open("rb") as src, archive.open(info, "w", force_zip64=True) as dst:
        while chunk := src.read(MiB // 4):
            dst.write(chunk)
    archive.writestr("manifest.json", '{"reference": "DSR-1"}')
    archive.close()

    with zipfile.ZipFile(io.BytesIO(out.data)) as plain:  # data descriptors: the stream could not seek
        assert all(i.flag_bits & 0x9 == 0x9 and i.compress_type == 99 for i in plain.infolist())
    with pyzipper.AESZipFile(io.BytesIO(out.data)) as archive:
        archive.setpassword(password.encode())
        assert archive.read("media/voicemail.mp3") == media.read_bytes()
        stamp = info.date_time  # kept, to the two seconds a ZIP time can tell
        assert archive.getinfo("media/voicemail.mp3").date_time == (*stamp[:5], stamp[5] // 2 * 2)
        assert json.loads(archive.read("manifest.json")) == {"reference": "DSR-1"}


def test_a_sealed_password_opens_only_for_its_artifact_and_key():
    key, artifact = os.urandom(32), uuid.uuid4()
    sealed = seal_password("k7dq-x2mf-9rta-bn4e-wh3s-c8pz", key, artifact)
    assert b"k7dq" not in sealed
    assert unseal_password(sealed, key, artifact) == "k7dq-x2mf-9rta-bn4e-wh3s-c8pz"
    assert seal_password("k7dq-x2mf-9rta-bn4e-wh3s-c8pz", key, artifact) != sealed  # a fresh nonce each time
    for wrong_key, wrong_artifact in ((key, uuid.uuid4()), (os.urandom(32), artifact)):
        with pytest.raises(PasswordUnreadable):
            unseal_password(sealed, wrong_key, wrong_artifact)
    changed = bytearray(sealed)
    changed[-1] ^= 1
    with pytest.raises(PasswordUnreadable):
        unseal_password(bytes(changed), key, artifact)
