"""Digests, manifests and comparing endpoints."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from asyncopy.api import copy_sync, copy_uri, verify_manifest, verify_uris
from asyncopy.core.engine import CopyOptions
from asyncopy.core.verify import Manifest, chunk_digest, zero_digest
from asyncopy.errors import UsageError
from tests.conftest import MakeLoop, MiB, poke, write_pattern


def test_manifest_records_the_source_digests(tmp_path: Path) -> None:
    src, dst, manifest = tmp_path / "src.img", tmp_path / "dst.img", tmp_path / "m.json"
    image = write_pattern(src, 5 * MiB + 7, [(0, 10), (4 * MiB, 1 * MiB + 7)])
    copy_sync(str(src), str(dst), CopyOptions(chunk_size=1 * MiB), manifest=manifest)
    doc = json.loads(manifest.read_text())
    assert (doc["format"], doc["version"], doc["algorithm"]) == ("asyncopy-manifest", 1, "xxh3-128")
    assert (doc["size"], doc["chunk_size"]) == (5 * MiB + 7, 1 * MiB)
    expected = [chunk_digest(image[i : i + MiB]).hex() for i in range(0, len(image), MiB)]
    assert doc["digests"] == expected
    assert doc["digests"][1] == zero_digest(MiB).hex()


async def test_a_changed_byte_is_found_by_both_kinds_of_verify(tmp_path: Path) -> None:
    src, dst, manifest = tmp_path / "src.img", tmp_path / "dst.img", tmp_path / "m.json"
    write_pattern(src, 6 * MiB, [(0, 6 * MiB)])
    await copy_uri(str(src), str(dst), manifest=manifest)
    assert await verify_uris(str(src), str(dst), 1 * MiB, 4) == []
    assert await verify_manifest(manifest, str(dst), 4) == []
    poke(dst, 5 * MiB + 3, b"!")
    assert await verify_uris(str(src), str(dst), 1 * MiB, 4) == [(5 * MiB, 1 * MiB)]
    assert await verify_manifest(manifest, str(dst), 4) == [(4 * MiB, 2 * MiB)]


async def test_a_larger_volume_matches_only_if_its_extra_bytes_are_zero(tmp_path: Path) -> None:
    small, large = tmp_path / "small.img", tmp_path / "large.img"
    write_pattern(small, 3 * MiB, [(0, 1000)])
    write_pattern(large, 5 * MiB, [(0, 1000)])
    assert await verify_uris(str(small), str(large), 1 * MiB, 2) == []
    poke(large, 4 * MiB, b"x")
    assert await verify_uris(str(small), str(large), 1 * MiB, 2) == [(4 * MiB, 1 * MiB)]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("not json", "not JSON"),
        ('{"format": "other"}', "not an asyncopy manifest"),
        ('{"format": "asyncopy-manifest", "version": 9, "algorithm": "xxh3-128"}', "unsupported"),
        (
            '{"format": "asyncopy-manifest", "version": 1, "algorithm": "xxh3-128", '
            '"size": 10, "chunk_size": 4, "digests": []}',
            "expected 3 digests",
        ),
    ],
)
def test_a_bad_manifest_is_bad_input(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "m.json"
    path.write_text(content)
    with pytest.raises(UsageError, match=message):
        Manifest.read(path)


@pytest.mark.parametrize(
    ("size", "chunk_size"), [(-1, 4096), (-5, 4), (10, 0), (10, 1 << 40), (True, 4096)]
)
def test_a_manifest_with_impossible_sizes_is_bad_input(
    tmp_path: Path, size: object, chunk_size: object
) -> None:
    path = tmp_path / "m.json"
    doc = {"format": "asyncopy-manifest", "version": 1, "algorithm": "xxh3-128"}
    path.write_text(json.dumps({**doc, "size": size, "chunk_size": chunk_size, "digests": []}))
    with pytest.raises(UsageError, match="bad size or chunk_size"):
        Manifest.read(path)


async def test_verify_refuses_a_chunk_size_off_the_block_grid(make_loop: MakeLoop) -> None:
    device, _ = make_loop(1 * MiB, sector_size=4096)
    with pytest.raises(UsageError, match="multiple of the block size 4096"):
        await verify_uris(device, device, 1000, 2)
