"""Artifacts at rest: sealed in authenticated chunks; any change, cut or wrong key is caught."""

from __future__ import annotations

import hashlib
import os

import pytest

from dsr.exports.sealed import CHUNK, MAGIC, SealBroken, SealingWriter, seal, storage_key, unseal

KEY = storage_key("a test secret of enough length for the app " * 2)


@pytest.mark.parametrize("size", [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 3 * CHUNK + 17])
def test_seal_and_unseal_round_trip(tmp_path, size):
    data = os.urandom(size)
    (tmp_path / "plain").write_bytes(data)
    seal(tmp_path / "plain", tmp_path / "sealed", KEY)
    stored = (tmp_path / "sealed").read_bytes()
    assert stored.startswith(MAGIC)
    assert size < 64 or data[:64] not in stored  # nothing readable at rest
    assert b"".join(unseal(tmp_path / "sealed", KEY)) == data


def _sealed(tmp_path, size=2 * CHUNK + 5):  # type: ignore[no-untyped-def]
    (tmp_path / "plain").write_bytes(os.urandom(size))
    seal(tmp_path / "plain", tmp_path / "sealed", KEY)
    return tmp_path / "sealed"


def test_a_changed_byte_is_caught_before_its_chunk_is_handed_on(tmp_path):
    path = _sealed(tmp_path)
    data = bytearray(path.read_bytes())
    data[len(MAGIC) + 8 + 4 + 100] ^= 0x01  # inside the first chunk
    path.write_bytes(bytes(data))
    with pytest.raises(SealBroken, match="chunk 0"):
        next(unseal(path, KEY))


def test_a_file_cut_short_or_extended_is_caught(tmp_path):
    path = _sealed(tmp_path)
    whole = path.read_bytes()
    path.write_bytes(whole[: len(whole) - (CHUNK // 2)])  # the last chunk gone
    with pytest.raises(SealBroken):
        list(unseal(path, KEY))
    first_two = len(MAGIC) + 8 + 2 * (4 + CHUNK + 16)
    path.write_bytes(whole[:first_two])  # cut exactly at a chunk boundary: no chunk says it is the last
    with pytest.raises(SealBroken, match="cut short"):
        list(unseal(path, KEY))
    path.write_bytes(whole + b"extra")
    with pytest.raises(SealBroken, match="after its last chunk"):
        list(unseal(path, KEY))


def test_another_key_or_a_foreign_file_is_refused(tmp_path):
    path = _sealed(tmp_path)
    with pytest.raises(SealBroken):
        list(unseal(path, storage_key("another secret, another installation, another key")))
    (tmp_path / "zip").write_bytes(b"PK\x03\x04 not sealed")
    with pytest.raises(SealBroken, match="not a sealed"):
        list(unseal(tmp_path / "zip", KEY))


@pytest.mark.parametrize("size", [0, CHUNK, 2 * CHUNK + 5])
def test_sealing_writer_seals_a_stream_in_pieces_and_knows_its_hash(tmp_path, size):
    data = os.urandom(size)
    writer = SealingWriter(tmp_path / "sealed", KEY)
    position, piece = 0, 1
    while position < size:  # pieces of every size, some larger than a chunk
        writer.write(data[position:position + piece])
        position, piece = position + piece, piece * 3 + 1
    assert not (tmp_path / "sealed").exists()  # under its temporary name until closed
    writer.close()
    assert b"".join(unseal(tmp_path / "sealed", KEY)) == data
    assert (writer.size, writer.sha256) == (size, hashlib.sha256(data).hexdigest())
    # The same layout as sealing a finished file: one chunk more for an exact multiple, none less.
    (tmp_path / "plain").write_bytes(data)
    seal(tmp_path / "plain", tmp_path / "again", KEY)
    assert (tmp_path / "again").stat().st_size == (tmp_path / "sealed").stat().st_size


def test_a_discarded_writer_leaves_nothing(tmp_path):
    writer = SealingWriter(tmp_path / "sealed", KEY)
    writer.write(b"half a package")
    writer.discard()
    assert list(tmp_path.iterdir()) == []
