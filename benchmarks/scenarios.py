"""What is measured: the layouts of a source volume, the paths, and every tool's command line.

A path copies one kind of endpoint to another: ``rbd`` (an image in the dev stack's pool),
``file`` (a regular file), ``loop`` (a loop device over a file) or ``iscsi`` (a thin tgtd LUN).
Each kind is named the way each tool takes it: asyncopy and qemu-img both read
``rbd:POOL/IMAGE:conf=PATH`` and ``iscsi://`` URLs, the ``rbd`` command wants ``POOL/IMAGE``,
``dd`` and Cinder's ``copy_volume`` want paths (Cinder gets RBD images as os-brick
``RBDVolumeIOWrapper`` objects, see ``benchmarks/cinder_copy.py``).

The peers of a path are every other tool that can do that copy on this host: ``qemu-img
convert`` in its default form and with ``-m 16 -W``, the ``rbd`` command's own copies, ``dd``
between local paths, and Cinder's ``copy_volume`` (not for iSCSI LUNs: Cinder reaches them
only through the kernel initiator, which this host lacks).
"""

from __future__ import annotations

import errno
import json
import random
import shlex
import sys
from collections import deque
from collections.abc import Collection, Iterable, Iterator
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any, Literal

import xxhash

from devtools import devstack
from devtools.images import write_sparse

ASYNCOPY = (sys.executable, "-m", "asyncopy")
CINDER_COPY = (sys.executable, "-m", "benchmarks.cinder_copy")
OBJECT = 4 << 20  # RBD's default object size: the unit of every layout
WRITE_WINDOW = 8  # librbd writes in flight while a source image is written

Kind = Literal["rbd", "file", "loop", "iscsi"]


class Role(StrEnum):
    """How a tool's times are read: asyncopy's against the peers' and Cinder's."""

    ASYNCOPY = "asyncopy"
    VERIFY = "asyncopy --verify"  # asyncopy with --verify: not a peer, its own row
    PEER = "peer"
    CINDER = "cinder"  # reported beside the peers, never the best peer


@dataclass(frozen=True, slots=True)
class Layout:
    """Which share of a source's 4 MiB objects holds data (random bytes, scattered)."""

    id: str
    title: str
    share: float
    skip: tuple[str, ...] = ()  # tools not run on this layout (see TRIMMED)

    def objects(self, size: int) -> int:
        """How many objects of a volume of ``size`` bytes hold data (at least one)."""
        count = -(-size // OBJECT)
        return count if self.share >= 1 else max(1, round(count * self.share))


DD = "dd bs=4M iflag=direct oflag=direct"
CINDER = "cinder copy_volume"
LAYOUTS = (
    Layout("100", "dense (100% of objects)", 1.0, skip=(CINDER,)),
    Layout("50", "50% of objects, scattered", 0.5),
    Layout("1", "1% of objects, scattered", 0.01, skip=(DD, CINDER)),
)
TRIMMED = (
    "not run on this layout, to keep the default run near 20 minutes: it reads and writes "
    "every byte whatever the layout (its time hardly changes); the 50% layout measures it"
)


@dataclass(frozen=True, slots=True)
class Route:
    """A path: copy a ``src`` kind of endpoint to a ``dst`` kind."""

    src: Kind
    dst: Kind

    @property
    def id(self) -> str:
        return f"{self.src}-{self.dst}"

    @property
    def title(self) -> str:
        return f"{self.src} -> {self.dst}"


ROUTES = (
    Route("rbd", "rbd"),
    Route("rbd", "file"),
    Route("file", "rbd"),
    Route("rbd", "iscsi"),
    Route("iscsi", "rbd"),
    Route("rbd", "loop"),
    Route("loop", "rbd"),
    Route("file", "loop"),
)
VERIFY_ROUTES = ("rbd-rbd", "rbd-file")  # where "copy --verify" gets its own row


@dataclass(frozen=True, slots=True)
class Endpoint:
    """One end of a path, named for every tool.

    ``uri`` is what asyncopy and qemu-img take; ``image`` is ``POOL/IMAGE`` for the ``rbd``
    command; ``local`` is a path ``dd`` and Cinder can open; ``sync`` is the local file a
    run's output is synced through (the LUN's backing file for iSCSI).
    """

    kind: Kind
    uri: str
    image: str | None = None
    local: str | None = None
    sync: str | None = None

    @property
    def exists(self) -> bool:
        """Devices and LUNs exist before a copy; images and files are created by it."""
        return self.kind in ("loop", "iscsi")


def rbd_endpoint(conf: str, pool: str, name: str) -> Endpoint:
    return Endpoint("rbd", f"rbd:{pool}/{name}:conf={conf}", image=f"{pool}/{name}")


def local_endpoint(kind: Kind, path: str) -> Endpoint:
    return Endpoint(kind, path, local=path, sync=path)


def lun_endpoint(url: str, backing: str) -> Endpoint:
    return Endpoint("iscsi", url, sync=backing)


@dataclass(frozen=True, slots=True)
class Tool:
    """A command that copies ``src`` to ``dst``; ``precreate``: the destination must exist."""

    name: str
    role: Role
    argv: tuple[str, ...]
    precreate: bool = False


def tools(
    route: Route,
    src: Endpoint,
    dst: Endpoint,
    conf: str,
    *,
    with_verify: bool = False,
    skip: Collection[str] = (),
) -> list[Tool]:
    """asyncopy and every peer that can copy ``src`` to ``dst`` (but those named in
    ``skip``), asyncopy first."""
    found = [Tool("asyncopy", Role.ASYNCOPY, (*ASYNCOPY, "copy", src.uri, dst.uri))]
    if with_verify:
        verify = (*ASYNCOPY, "copy", "--verify", src.uri, dst.uri)
        found.append(Tool("asyncopy --verify", Role.VERIFY, verify))
    found.extend(qemu_tools(src, dst))
    found.extend(rbd_tools(src, dst, conf))
    if src.local is not None and dst.local is not None:
        dd = ("dd", f"if={src.local}", f"of={dst.local}", "bs=4M", "iflag=direct", "oflag=direct")
        found.append(Tool(DD, Role.PEER, (*dd, "status=none")))
    cinder_src, cinder_dst = cinder_spec(src), cinder_spec(dst)
    if cinder_src is not None and cinder_dst is not None:
        cinder = (*CINDER_COPY, cinder_src, cinder_dst)
        found.append(Tool(CINDER, Role.CINDER, cinder, precreate=True))
    return [tool for tool in found if tool.name not in skip]


def qemu_tools(src: Endpoint, dst: Endpoint) -> list[Tool]:
    """``qemu-img convert`` as it comes, and with 16 coroutines and out-of-order writes."""
    n = ("-n",) if dst.exists else ()  # write into the existing device or LUN
    qemu = ("qemu-img", "convert", "-f", "raw", "-O", "raw", *n)
    label = " ".join(("qemu-img convert", *n))
    return [
        Tool(label, Role.PEER, (*qemu, src.uri, dst.uri)),
        Tool(f"{label} -m 16 -W", Role.PEER, (*qemu, "-m", "16", "-W", src.uri, dst.uri)),
    ]


def rbd_tools(src: Endpoint, dst: Endpoint, conf: str) -> list[Tool]:
    """The ``rbd`` command's copies: cp, export, import, and export piped into import."""
    rbd = ("rbd", "-c", conf, "--no-progress")
    if src.image is not None and dst.image is not None:
        pipe = f"{shlex.join((*rbd, 'export', src.image, '-'))} | "
        pipe += shlex.join((*rbd, "import", "-", dst.image))
        return [
            Tool("rbd cp", Role.PEER, (*rbd, "cp", src.image, dst.image)),
            Tool("rbd export - | rbd import -", Role.PEER, ("bash", "-o", "pipefail", "-c", pipe)),
        ]
    if src.image is not None and dst.kind == "file" and dst.local is not None:
        return [Tool("rbd export", Role.PEER, (*rbd, "export", src.image, dst.local))]
    if dst.image is not None and src.local is not None:
        return [Tool("rbd import", Role.PEER, (*rbd, "import", src.local, dst.image))]
    return []


def cinder_spec(end: Endpoint) -> str | None:
    """How ``benchmarks.cinder_copy`` names an endpoint; None where Cinder cannot reach it."""
    if end.kind == "rbd":
        return end.uri
    return end.local


NOT_APPLICABLE = {
    CINDER: "Cinder reaches an iSCSI LUN only through the kernel initiator "
    "(iscsiadm), which this kernel lacks",
}


def blocks(size: int, count: int, seed: int) -> Iterator[tuple[int, bytes]]:
    """(offset, bytes) of ``count`` scattered objects of random bytes, each one different."""
    rng = random.Random(seed)
    total = -(-size // OBJECT)
    pool = rng.randbytes(2 * OBJECT)
    for index in sorted(rng.sample(range(total), count)):
        offset, start = index * OBJECT, rng.randrange(OBJECT)
        length = min(OBJECT, size - offset)
        yield offset, index.to_bytes(8, "little") + pool[start + 8 : start + length]


def write_file(path: Path, size: int, data: Iterable[tuple[int, bytes]]) -> None:
    """A new sparse file of ``size`` bytes holding ``data``, synced."""
    if path.exists():
        raise FileExistsError(errno.EEXIST, "exists already", str(path))
    write_sparse(path, size, data, sync=True)


def write_manifest(path: Path, size: int, data: Iterable[tuple[int, bytes]]) -> None:
    """The digests of a volume holding ``data`` in asyncopy's manifest format (version 1);
    ``size`` is a multiple of the object size.

    Made from the bytes the benchmark wrote, not read back by asyncopy: ``asyncopy verify
    --manifest`` then checks a peer's output by reading only that output.
    """
    zero = xxhash.xxh3_128_hexdigest(bytes(OBJECT))
    digests = [zero] * -(-size // OBJECT)
    for offset, chunk in data:
        digests[offset // OBJECT] = xxhash.xxh3_128_hexdigest(chunk)
    document = {
        "format": "asyncopy-manifest",
        "version": 1,
        "algorithm": "xxh3-128",
        "size": size,
        "chunk_size": OBJECT,
        "digests": digests,
    }
    path.write_text(json.dumps(document) + "\n")


def write_image(
    conf: str, pool: str, name: str, size: int, data: Iterable[tuple[int, bytes]]
) -> None:
    """A new RBD image of ``size`` bytes holding ``data``, written through librbd."""
    import rados
    import rbd

    cluster = rados.Rados(conffile=conf, conf=devstack.client_conf(60))
    cluster.connect()
    try:
        with cluster.open_ioctx(pool) as ioctx:
            rbd.RBD().create(ioctx, name, size)
            with rbd.Image(ioctx, name) as image:
                pending: deque[Any] = deque()
                for offset, chunk in data:
                    pending.append(image.aio_write(chunk, offset, None))
                    if len(pending) == WRITE_WINDOW:
                        finish(pending.popleft(), name)
                while pending:
                    finish(pending.popleft(), name)
                image.flush()
    finally:
        cluster.shutdown()


def finish(completion: Any, name: str) -> None:
    completion.wait_for_complete_and_cb()
    if completion.get_return_value() < 0:
        raise OSError(-completion.get_return_value(), f"writing rbd image {name} failed")
