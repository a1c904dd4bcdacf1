"""asyncopy's settings as oslo.config options, in an ``[asyncopy]`` group.

Cinder (or any oslo.config user) registers them with ``register_opts(conf)``; the command line
reads the same options from ``--config-file`` files, and its flags win. ``list_opts`` feeds
``oslo-config-generator --namespace asyncopy``; ``etc/asyncopy.conf.sample`` is its output.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from oslo_config import cfg

from asyncopy.ceph import DEFAULT_TIMEOUT as CEPH_TIMEOUT
from asyncopy.ceph import CephOptions
from asyncopy.engine import DEFAULT_DEPTH, CopyOptions
from asyncopy.errors import UsageError
from asyncopy.iscsi import DEFAULT_TIMEOUT as ISCSI_TIMEOUT
from asyncopy.iscsi import IscsiOptions
from asyncopy.sizes import parse_size
from asyncopy.uri import EndpointOptions

GROUP = "asyncopy"


OPTS = [
    cfg.StrOpt(
        "chunk_size",
        default="4M",
        help="Unit of I/O and of digests (K, M, G suffixes, binary).",
    ),
    cfg.IntOpt("depth", default=DEFAULT_DEPTH, min=1, help="Chunks in flight at most."),
    cfg.StrOpt(
        "max_inflight",
        default="64M",
        help="Buffer budget: at most min(depth, max_inflight / chunk_size) chunks are held.",
    ),
    cfg.StrOpt(
        "sparse_size",
        default="4K",
        help="Zero-detection unit, as qemu-img convert -S; 0 writes every byte.",
    ),
    cfg.BoolOpt(
        "verify",
        default=False,
        help="Re-read the destination after the copy and compare every chunk's xxh3-128 "
        "digest with the source's; a mismatch fails the copy.",
    ),
    cfg.StrOpt(
        "iscsi_transport",
        default="brick",
        choices=[
            ("brick", "attach with os-brick (the kernel initiator), as Cinder does"),
            ("userspace", "asyncopy's own user-space initiator (libiscsi), no iscsid needed"),
        ],
        help="How an iSCSI connection_info is opened.",
    ),
    cfg.FloatOpt(
        "ceph_timeout",
        default=CEPH_TIMEOUT,
        min=1,
        max=3600,
        help="Seconds before a Ceph connection or operation fails (a stopped or full "
        "cluster is an error, never a hang).",
    ),
    cfg.IntOpt(
        "iscsi_timeout",
        default=ISCSI_TIMEOUT,
        min=1,
        max=3600,
        help="Seconds before an iSCSI login or command of the user-space initiator fails.",
    ),
    cfg.StrOpt(
        "root_helper",
        default="sudo",
        help="How os-brick runs commands as root (cinder-volume uses its rootwrap).",
    ),
]


def list_opts() -> list[tuple[str, list[cfg.Opt]]]:
    """For oslo-config-generator (entry point ``oslo.config.opts``: ``asyncopy``)."""
    return [(GROUP, OPTS)]


def register_opts(conf: cfg.ConfigOpts) -> None:
    conf.register_opts(OPTS, group=GROUP)


def load(files: list[str]) -> cfg.ConfigOpts:
    """A private ConfigOpts with asyncopy's options read from ``files``; bad input is a
    UsageError."""
    conf = cfg.ConfigOpts()
    register_opts(conf)
    try:
        conf([], project="asyncopy", default_config_files=files, use_env=False)
    except (cfg.Error, ValueError) as exc:
        raise UsageError(f"configuration: {_one_line(exc)}") from exc
    return conf


def copy_options(conf: cfg.ConfigOpts, **overrides: Any) -> CopyOptions:
    """The engine's options from ``[asyncopy]``; keyword arguments that are not None win."""
    values = group(conf)
    options = CopyOptions(
        chunk_size=parse_size(values.chunk_size, "chunk size"),
        depth=values.depth,
        max_inflight_bytes=parse_size(values.max_inflight, "in-flight size"),
        sparse_size=parse_size(values.sparse_size, "sparse size"),
        verify=values.verify,
    )
    given = {key: value for key, value in overrides.items() if value is not None}
    return replace(options, **given) if given else options


def endpoint_options(conf: cfg.ConfigOpts, ceph_conf: str | None = None) -> EndpointOptions:
    values = group(conf)
    return EndpointOptions(
        ceph=CephOptions(timeout=values.ceph_timeout, conf=ceph_conf),
        iscsi=IscsiOptions(timeout=values.iscsi_timeout),
        root_helper=values.root_helper,
    )


def group(conf: cfg.ConfigOpts) -> Any:
    """The ``[asyncopy]`` group's values; a bad value is a UsageError."""
    try:
        return conf[GROUP]
    except (cfg.Error, ValueError) as exc:
        raise UsageError(f"configuration [{GROUP}]: {_one_line(exc)}") from exc


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())
