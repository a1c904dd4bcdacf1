"""Test-side access to the dev-stack cluster: make images with known bytes, read them back,
ask ``rbd du``, ``rbd status`` and ``qemu-img compare`` (the independent oracle)."""

from __future__ import annotations

import json
import random
import subprocess
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import rados
import rbd

from devtools.devstack import Stack, client_conf

MiB = 1 << 20


class Cluster:
    def __init__(self, stack: Stack) -> None:
        self.stack = stack
        self.conf = stack.ceph_conf
        self.pool = stack.pool

    def name(self, prefix: str = "img") -> str:
        return f"{prefix}-{uuid.uuid4().hex[:8]}"

    def uri(self, name: str, snap: str | None = None) -> str:
        at = f"@{snap}" if snap else ""
        return f"rbd:{self.pool}/{name}{at}:conf={self.conf}"

    @contextmanager
    def ioctx(self) -> Iterator[Any]:
        cluster = rados.Rados(conffile=self.conf, conf=client_conf(10))
        try:
            cluster.connect(timeout=10)
            with cluster.open_ioctx(self.pool) as ioctx:
                yield ioctx
        finally:
            cluster.shutdown()

    @contextmanager
    def image(self, name: str, snap: str | None = None) -> Iterator[Any]:
        with self.ioctx() as ioctx, rbd.Image(ioctx, name, snapshot=snap) as image:
            yield image

    def create(
        self,
        name: str,
        size: int,
        data_at: Sequence[tuple[int, int]] = (),
        *,
        seed: int = 1,
        order: int | None = None,
        features: int | None = None,
        fill: bytes | None = None,
    ) -> bytes:
        """An image of ``size`` with random bytes at the (offset, length) runs; its bytes."""
        rng = random.Random(seed)
        content = bytearray(size)
        with self.ioctx() as ioctx:
            rbd.RBD().create(ioctx, name, size, order=order, features=features)
            with rbd.Image(ioctx, name) as image:
                if fill is not None:
                    image.write(fill, 0)
                    content[: len(fill)] = fill
                for offset, length in data_at:
                    chunk = rng.randbytes(length)
                    image.write(chunk, offset)
                    content[offset : offset + length] = chunk
        return bytes(content)

    def read(self, name: str, snap: str | None = None) -> bytes:
        with self.image(name, snap) as image:
            size = image.size()
            return b"".join(
                image.read(offset, min(16 * MiB, size - offset))
                for offset in range(0, size, 16 * MiB)
            )

    def exists(self, name: str) -> bool:
        with self.ioctx() as ioctx:
            return name in rbd.RBD().list(ioctx)

    def used(self, name: str) -> int:
        """``rbd du``'s used bytes."""
        out = self._rbd("du", f"{self.pool}/{name}")
        return int(out["images"][0]["used_size"])

    def watchers(self, name: str) -> list[Any]:
        return list(self._rbd("status", f"{self.pool}/{name}")["watchers"])

    def _rbd(self, *args: str) -> Any:
        done = subprocess.run(
            ["rbd", "-c", self.conf, *args, "--format", "json"],
            check=True,
            capture_output=True,
            text=True,
            timeout=60,
        )
        return json.loads(done.stdout)


def qemu_identical(a: str, b: str) -> bool:
    """``qemu-img compare`` of two raw endpoints (paths, devices or rbd: URIs)."""
    done = subprocess.run(
        ["qemu-img", "compare", "-f", "raw", "-F", "raw", a, b],
        capture_output=True,
        text=True,
        timeout=300,
    )
    if done.returncode not in (0, 1):
        raise AssertionError(f"qemu-img compare failed: {done.stderr.strip()}")
    return done.returncode == 0


def objects_with_data(content: bytes, object_size: int) -> int:
    """How many objects of the image hold a non-zero byte."""
    chunks = (content[start : start + object_size] for start in range(0, len(content), object_size))
    return sum(1 for chunk in chunks if chunk != bytes(len(chunk)))
