"""asyncopy's settings as oslo.config options, in an ``[asyncopy]`` group.

Cinder (or any oslo.config user) registers them with ``register_opts(conf)``; the command line
reads the same options from its ``--config-file`` files, and its flags win. ``list_opts`` is
the ``oslo.config.opts`` entry point ``asyncopy``: ``oslo-config-generator --namespace
asyncopy`` writes ``etc/asyncopy.conf.sample``, and tests/test_config.py fails when that file
is stale.

Every default is read from the engine's and the endpoints' own defaults (``CopyOptions()``,
``EndpointOptions()``), so the library, the command line and the sample cannot drift apart.
oslo.config converts a value only when it is read; ``group`` reads them all at once, so a bad
value is one ``UsageError`` naming the option (and ``load`` names the file), raised before
anything is opened.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from typing import Any

from oslo_config import cfg, types

from asyncopy import settings
from asyncopy.access.conffile import check_regular
from asyncopy.core.engine import CopyOptions
from asyncopy.core.sizes import parse_size
from asyncopy.errors import UsageError
from asyncopy.settings import GROUP, MAX_TIMEOUT, MIN_CEPH_TIMEOUT, Settings, size_text
from asyncopy.specs import EndpointOptions

_DEFAULTS = settings.DEFAULTS
_AT_LINE = re.compile(r"^at .*:(\d+), ")


class Size(types.ConfigType):
    """Bytes as operators type them: 4096, 64K, 4M (binary multiples, as qemu-img)."""

    def __init__(self) -> None:
        super().__init__(type_name="size value")

    def __call__(self, value: Any) -> int:
        if isinstance(value, int):
            return value
        try:
            return parse_size(str(value))
        except UsageError:
            raise ValueError(
                f"{value!r} is not a size (a number with an optional K, M, G or T)"
            ) from None

    def _formatter(self, value: Any) -> str:
        return size_text(int(value))


OPTS: list[cfg.Opt] = [
    cfg.Opt(
        "chunk_size",
        type=Size(),
        default=_DEFAULTS.chunk_size,
        help="Unit of I/O and of digests. Sizes take K, M, G or T (binary multiples, as qemu-img).",
    ),
    cfg.IntOpt(
        "depth",
        default=_DEFAULTS.depth,
        min=1,
        help="Chunks in flight, fixed. Unset, a copy tunes it by its own throughput (more "
        "chunks while that gains, fewer when it does not), within max_inflight.",
    ),
    cfg.Opt(
        "max_inflight",
        type=Size(),
        default=_DEFAULTS.max_inflight,
        help="Buffer budget: at most max_inflight / chunk_size chunks (and depth, if set) are "
        "held at once; unless depth is set, a chunk read from RBD counts twice (librados "
        "holds it too). At least chunk_size.",
    ),
    cfg.Opt(
        "sparse_size",
        type=Size(),
        default=_DEFAULTS.sparse_size,
        help="Zero-detection unit, as qemu-img convert -S: aligned runs of zeros this long "
        "are skipped on a destination known to read zeros and zeroed on any other; 0 writes "
        "every byte. Must divide chunk_size.",
    ),
    cfg.BoolOpt(
        "verify",
        default=_DEFAULTS.verify,
        help="Re-read the destination after the copy and compare every chunk's xxh3-128 "
        "digest with the source's; a mismatch fails the copy.",
    ),
    cfg.StrOpt(
        "iscsi_transport",
        default=_DEFAULTS.iscsi_transport,
        choices=[
            ("brick", "attach with os-brick (the kernel initiator), as Cinder does"),
            ("userspace", "asyncopy's own user-space initiator (libiscsi), no iscsid needed"),
        ],
        help="How an iSCSI connection_info is opened.",
    ),
    cfg.StrOpt(
        "ceph_conf",
        default=_DEFAULTS.ceph_conf,
        help="ceph.conf for an rbd: URI that names none (a command line flag wins); unset: "
        "librados' default. An rbd connection_info names its monitors and needs none.",
    ),
    cfg.FloatOpt(
        "ceph_timeout",
        default=_DEFAULTS.ceph_timeout,
        min=MIN_CEPH_TIMEOUT,
        max=MAX_TIMEOUT,
        help="Seconds before an unanswered Ceph request fails the copy (a stopped or full "
        "cluster is an error, never a hang); a copy whose cluster stops answering ends "
        "within twice this, clean-up included. Sets rados_osd_op_timeout, "
        "rados_mon_op_timeout and client_mount_timeout.",
    ),
    cfg.IntOpt(
        "iscsi_timeout",
        default=_DEFAULTS.iscsi_timeout,
        min=1,
        max=MAX_TIMEOUT,
        help="Seconds before an iSCSI login or command of the user-space initiator fails.",
    ),
    cfg.StrOpt(
        "ionice",
        default=_DEFAULTS.ionice,
        help="I/O priority of the copies Cinder runs (asyncopy.cinder), as ionice's options: "
        "-c3 for idle, -c2 -n7 for the lowest best-effort level; set with ioprio_set. Unset: "
        "cinder-volume's own. copy_volume's ionice argument wins.",
    ),
    cfg.StrOpt(
        "root_helper",
        default=_DEFAULTS.root_helper,
        help="How os-brick runs commands as root (cinder-volume uses its rootwrap).",
    ),
]


def list_opts() -> list[tuple[str, list[cfg.Opt]]]:
    """For oslo-config-generator (entry point ``oslo.config.opts``: ``asyncopy``)."""
    return [(GROUP, OPTS)]


def register_opts(conf: cfg.ConfigOpts) -> None:
    conf.register_opts(OPTS, group=GROUP)


def load(files: Sequence[str], defaults: Mapping[str, Any] | None = None) -> cfg.ConfigOpts:
    """A private ConfigOpts with asyncopy's options read from ``files`` (later files win).

    Only these files are read: no ``/etc/asyncopy`` search, no environment. ``defaults``
    replace options' defaults (Cinder's migrations verify unless a file says otherwise).

    Raises:
        UsageError: a file is missing, not a regular file (a FIFO would block the read for
            good), unreadable or unparsable, or holds a bad value; the message names the file.
    """
    for path in files:  # each file alone, so that an error names its file
        if os.path.lexists(path):  # a missing one is oslo.config's "not found"
            check_regular(path, "configuration file")
        try:
            group(_read([path], defaults))
        except UsageError as exc:
            raise UsageError(f"configuration file {path}: {exc}") from exc
    conf = _read(files, defaults)
    group(conf)
    return conf


def _read(files: Sequence[str], defaults: Mapping[str, Any] | None = None) -> cfg.ConfigOpts:
    conf = cfg.ConfigOpts()
    register_opts(conf)
    for name, value in (defaults or {}).items():
        try:
            conf.set_default(name, value, group=GROUP)
        except cfg.NoSuchOptError as exc:
            raise UsageError(f"[{GROUP}] has no option {name!r}") from exc
    try:
        conf(
            [],
            project=GROUP,
            default_config_files=list(files),
            default_config_dirs=[],
            use_env=False,
        )
    except cfg.ConfigFilesNotFoundError as exc:
        raise UsageError("not found") from exc
    except cfg.ConfigFilesPermissionDeniedError as exc:
        raise UsageError("permission denied") from exc
    except cfg.ConfigFileParseError as exc:  # "at PATH:LINE, what"
        raise UsageError(
            _one_line(_AT_LINE.sub(r"line \1: ", exc.msg or str(exc), count=1))
        ) from exc
    except OSError as exc:
        raise UsageError(exc.strerror or _one_line(exc)) from exc
    except (cfg.Error, ValueError) as exc:
        raise UsageError(_one_line(exc)) from exc
    return conf


def group(conf: cfg.ConfigOpts) -> Settings:
    """The ``[asyncopy]`` group's values, every one converted and checked.

    Raises:
        UsageError: a value is bad (or the options are not registered); names the option.
    """
    values: dict[str, Any] = {}
    for opt in OPTS:
        try:
            values[opt.dest] = conf[GROUP][opt.dest]
        except (cfg.Error, ValueError) as exc:
            raise UsageError(f"[{GROUP}] {opt.dest}: {_value_error(exc)}") from exc
    return Settings(**values)


def copy_options(conf: cfg.ConfigOpts) -> CopyOptions:
    """The engine's options from ``[asyncopy]`` (flags are merged by ``settings``).

    Raises:
        UsageError: a bad value, or values that do not fit together.
    """
    return settings.copy_options(group(conf))


def endpoint_options(conf: cfg.ConfigOpts) -> EndpointOptions:
    """What opening a URI may need, from ``[asyncopy]``."""
    return settings.endpoint_options(group(conf))


def _value_error(exc: BaseException) -> str:
    """What was wrong with a value, without oslo.config's "Value for option ... from
    LocationInfo(...) is not valid:" wrapper (the original error is its context)."""
    inner = exc.__cause__ or exc.__context__
    if isinstance(exc, cfg.ConfigSourceValueError) and isinstance(inner, ValueError):
        return _one_line(inner)
    return _one_line(exc)


def _one_line(exc: BaseException | str) -> str:
    return " ".join(str(exc).split())
