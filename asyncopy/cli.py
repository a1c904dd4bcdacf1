"""The ``asyncopy`` command.

Exit codes: 0 success (for ``verify``: identical), 1 copy failed or (for ``verify``)
different, 2 bad input or error (as ``qemu-img compare``), and for a stop 128 plus the
signal's number, as a shell reports a process the signal killed: 129 hung up (SIGHUP: the
terminal closed, the ssh session dropped), 130 interrupted (SIGINT), 143 terminated
(SIGTERM). A stop cancels the copy and cleans up first. Errors are one line on stderr,
never a traceback; warnings (the library's ``warnings.warn`` included) are one
``asyncopy: warning:`` line there. Output that cannot be written (its reader gone) is
dropped and does not change the exit status (``asyncopy.process``).
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import warnings
from collections.abc import Sequence
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn, TextIO

from asyncopy import settings
from asyncopy.api import copy_uri, run_interruptibly, verify_manifest, verify_uris
from asyncopy.core.limits import check_counts, check_memory
from asyncopy.core.sizes import human, parse_size
from asyncopy.display import KINDS, display
from asyncopy.errors import AsyncopyError, CopyFailed, HungUp, Terminated, UsageError
from asyncopy.incremental import Since
from asyncopy.process import exit_process, say, tune_for_copy

if TYPE_CHECKING:
    from asyncopy.access.ceph import RbdCreate
    from asyncopy.core.engine import CopyResult
    from asyncopy.core.rate import RateLimit
    from asyncopy.display import Display
    from asyncopy.specs import EndpointOptions

EXIT_OK, EXIT_FAILED, EXIT_ERROR = 0, 1, 2
EXIT_HUNG_UP, EXIT_INTERRUPTED, EXIT_TERMINATED = 129, 130, 143
MAX_TIMEOUT = float(settings.MAX_TIMEOUT)  # seconds, for --ceph-timeout and --iscsi-timeout
MIN_CEPH_TIMEOUT = float(settings.MIN_CEPH_TIMEOUT)
VERIFY_DEPTH = 8  # chunks a verify reads at once, unless --depth or [asyncopy] depth says
_LIBRADOS = "librados' default"


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UsageError(message)


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="asyncopy", description="Fast, verified volume copies.")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    cp = commands.add_parser("copy", help="copy SRC onto DST")
    cp.add_argument(
        "src",
        help="source: a path, file:PATH, rbd:POOL/IMAGE[@SNAP][:opt=val], iscsi://... or "
        "brick:CONNECTION_INFO.json",
    )
    cp.add_argument(
        "dst",
        help="destination: a path, file:PATH, rbd:POOL/IMAGE (created if missing), iscsi://... or "
        "brick:CONNECTION_INFO.json",
    )
    _config_file(cp)
    cp.add_argument(
        "--verify",
        action=argparse.BooleanOptionalAction,
        help=_default("re-read DST and compare digests", "verify"),
    )
    cp.add_argument("--manifest", type=Path, help="write the source's digests to this file")
    cp.add_argument("--chunk-size", help=_default("I/O and digest unit", "chunk_size"))
    cp.add_argument(
        "--depth",
        type=int,
        help=_default("chunks in flight, fixed", "depth", "tuned by the copy's own throughput"),
    )
    cp.add_argument("--max-inflight", help=_default("buffer budget", "max_inflight"))
    cp.add_argument(
        "--sparse-size",
        help=_default("zero-detection granularity; 0 writes every byte", "sparse_size"),
    )
    cp.add_argument(
        "--target-is-zero",
        action="store_true",
        help="assert DST already reads as zeros: its holes are skipped",
    )
    cp.add_argument("--json", action="store_true", help="print one JSON object")
    cp.add_argument(
        "--progress",
        action="store_const",
        const="bar",
        help="show progress on stderr: a bar with the rate and time left on a terminal, a line "
        "every 10 s elsewhere; --progress=json: one JSON object per report",
    )
    cp.add_argument("--progress=", dest="progress", help=argparse.SUPPRESS)
    cp.add_argument(
        "--rate-limit",
        metavar="SIZE/s",
        help="read at most SIZE bytes a second (e.g. 100M/s): the source's data, zeros written "
        "to a destination that cannot zero, and the verifying re-read",
    )
    resuming = cp.add_argument_group("long copies")
    resuming.add_argument(
        "--journal",
        type=Path,
        metavar="PATH",
        help="keep a record of the work on DST at PATH (a new file), so that an interrupted "
        "copy can be resumed; a DST this copy creates is kept if it fails",
    )
    resuming.add_argument(
        "--resume",
        type=Path,
        metavar="PATH",
        help="continue the copy of SRC onto DST that the journal at PATH was kept for, "
        "redoing only what it does not show done",
    )
    resuming.add_argument(
        "--trust-source",
        action="store_true",
        help="with --resume: SRC did not change, though it cannot tell (the head of an image)",
    )
    resuming.add_argument(
        "--trust-destination",
        action="store_true",
        help="with --resume: DST is the journal's and holds what it shows done (not read "
        "back); with --since: DST holds SNAP's bytes (no --since-manifest needed)",
    )
    rbd = cp.add_argument_group("RBD endpoints")
    rbd.add_argument(
        "--since",
        metavar="SNAP",
        help="copy only what changed in the rbd: SRC since its snapshot SNAP onto a DST that "
        "holds SNAP's bytes",
    )
    rbd.add_argument(
        "--since-manifest",
        type=Path,
        metavar="PATH",
        help="with --since: the journal (checked) or manifest (DST is read and compared) of "
        "SNAP's copy onto DST",
    )
    rbd.add_argument(
        "--snapshot-destination",
        action="store_true",
        help="after the copy, take SRC's snapshot name on the rbd: DST (as rbd import-diff)",
    )
    rbd.add_argument(
        "--src-conf",
        help=_default("ceph.conf for an rbd: SRC that names none", "ceph_conf", _LIBRADOS),
    )
    rbd.add_argument(
        "--dst-conf",
        help=_default("ceph.conf for an rbd: DST that names none", "ceph_conf", _LIBRADOS),
    )
    _ceph_timeout(rbd)
    rbd.add_argument("--object-size", help="object size of a created DST image (e.g. 4M)")
    rbd.add_argument("--image-features", help="features of a created DST image, comma-separated")
    rbd.add_argument("--data-pool", help="data pool of a created DST image")
    _iscsi_timeout(cp)
    _root_helper(cp)
    rbd.add_argument(
        "--keep-on-failure",
        action="store_true",
        help="keep a DST image this copy created even when the copy fails",
    )

    vf = commands.add_parser("verify", help="compare A with B, or A with a manifest")
    vf.add_argument("a", help="endpoint to check")
    vf.add_argument("b", nargs="?", help="endpoint to compare with")
    _config_file(vf)
    vf.add_argument("--manifest", type=Path, help="manifest to check A against")
    vf.add_argument("--chunk-size", help=_default("digest unit", "chunk_size"))
    vf.add_argument(
        "--depth", type=int, help=_default("chunks in flight", "depth", str(VERIFY_DEPTH))
    )
    vf.add_argument("--json", action="store_true", help="print one JSON object")
    vf.add_argument(
        "--conf",
        help=_default("ceph.conf for rbd: endpoints that name none", "ceph_conf", _LIBRADOS),
    )
    _ceph_timeout(vf)
    _iscsi_timeout(vf)
    _root_helper(vf)

    return parser


def _default(text: str, option: str, unset: str = "") -> str:
    """Help for a flag left None when not given, so that ``[asyncopy] option`` fills it."""
    shown = unset or settings.shown_default(option).replace("%", "%%")
    return f"{text} (default: [{settings.GROUP}] {option}, else {shown})"


def _config_file(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config-file",
        action="append",
        default=[],
        metavar="PATH",
        help=f"read [{settings.GROUP}] options from PATH (repeatable: later files win; flags win "
        "over files)",
    )


def _ceph_timeout(parser: argparse._ActionsContainer) -> None:
    parser.add_argument(
        "--ceph-timeout",
        type=float,
        help=_default(
            "seconds before an unanswered Ceph request fails the copy; a copy whose cluster "
            "stops answering ends within twice this, clean-up included",
            "ceph_timeout",
        ),
    )


def _iscsi_timeout(parser: argparse._ActionsContainer) -> None:
    parser.add_argument(
        "--iscsi-timeout",
        type=int,
        help=_default(
            "seconds before an iSCSI login or command fails; CHAP credentials come from the "
            "URI or LIBISCSI_CHAP_USERNAME / LIBISCSI_CHAP_PASSWORD",
            "iscsi_timeout",
        ),
    )


def _root_helper(parser: argparse._ActionsContainer) -> None:
    parser.add_argument(
        "--root-helper",
        help=_default(
            "how os-brick runs commands as root, for brick:CONNECTION_INFO.json endpoints",
            "root_helper",
        ),
    )


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = _parser().parse_args(_progress_kind_apart(sys.argv[1:] if argv is None else argv))
        if args.command == "copy":
            return _copy(args)
        return _verify(args)
    except UsageError as exc:
        return _fail(_message(exc), EXIT_ERROR)
    except CopyFailed as exc:
        return _fail(_message(exc), EXIT_FAILED if args.command == "copy" else EXIT_ERROR)
    except AsyncopyError as exc:
        return _fail(_message(exc), EXIT_ERROR)
    except KeyboardInterrupt:
        return _fail("interrupted", EXIT_INTERRUPTED)
    except HungUp:
        return _fail("hung up", EXIT_HUNG_UP)
    except Terminated:
        return _fail("terminated", EXIT_TERMINATED)


def _progress_kind_apart(argv: Sequence[str]) -> list[str]:
    """``--progress=KIND`` as ``--progress= KIND``: a bare ``--progress`` then never takes
    the SRC after it for its value."""
    apart: list[str] = []
    for index, arg in enumerate(argv):
        if arg == "--":
            apart += argv[index:]
            break
        kind = arg.removeprefix("--progress=")
        apart += ["--progress=", kind] if kind != arg else [arg]
    return apart


def _warn_of_secrets(*specs: str | None) -> None:
    from asyncopy.specs import secret_in

    for spec in specs:
        warning = secret_in(spec) if spec else None
        if warning is not None:
            say(f"asyncopy: warning: {warning}", sys.stderr)


def _copy(args: argparse.Namespace) -> int:
    _warn_of_secrets(args.src, args.dst)
    values = _settings(args.config_file)
    options = settings.copy_options(
        values,
        chunk_size=_size(args.chunk_size, "chunk size"),
        depth=args.depth,
        max_inflight_bytes=_size(args.max_inflight, "in-flight size"),
        sparse_size=_size(args.sparse_size, "sparse size"),
        verify=args.verify,
    )
    if args.journal is not None and args.resume is not None:
        raise UsageError("--journal starts a journal, --resume continues one: give one of them")
    if args.trust_source and args.resume is None:
        raise UsageError("--trust-source goes with --resume")
    if args.trust_destination and args.resume is None and args.since is None:
        raise UsageError("--trust-destination goes with --resume or --since")
    if args.progress not in (None, *KINDS):
        raise UsageError(f"--progress={args.progress}: expected one of {', '.join(KINDS)}")
    shown = display(args.progress, sys.stderr) if args.progress else None
    _DISPLAY[0] = shown
    job = partial(
        copy_uri,
        args.src,
        args.dst,
        options,
        target_is_zero=args.target_is_zero,
        manifest=args.manifest,
        progress=shown,
        src_options=_endpoint_options(args, values, args.src_conf),
        dst_options=_endpoint_options(args, values, args.dst_conf, _create_options(args)),
        rate=_rate_limit(args.rate_limit),
        journal=args.resume or args.journal,
        resume=args.resume is not None,
        trust_source=args.trust_source,
        trust_destination=args.trust_destination,
        since=_since(args),
        snapshot_destination=args.snapshot_destination,
    )
    result = run_interruptibly(job)
    _end_display()
    say(json.dumps(result.summary()) if args.json else _describe(result), sys.stdout)
    return EXIT_OK


def _verify(args: argparse.Namespace) -> int:
    _warn_of_secrets(args.a, args.b)
    if (args.b is None) == (args.manifest is None):
        raise UsageError("verify takes A B, or --manifest PATH A")
    values = _settings(args.config_file)
    chunk_size = settings.given_or(_size(args.chunk_size, "chunk size"), values.chunk_size)
    depth = settings.given_or(args.depth, values.depth) or VERIFY_DEPTH
    check_counts(chunk_size, depth)
    check_memory(chunk_size, depth)
    options = _endpoint_options(args, values, args.conf)
    if args.manifest is not None:
        differing = run_interruptibly(
            partial(verify_manifest, args.manifest, args.a, depth, options)
        )
    else:
        differing = run_interruptibly(
            partial(verify_uris, args.a, args.b, chunk_size, depth, options)
        )
    if args.json:
        ranges = [{"offset": offset, "length": length} for offset, length in differing]
        say(json.dumps({"identical": not differing, "differing": ranges}), sys.stdout)
    elif differing:
        shown = ", ".join(f"{offset}+{length}" for offset, length in differing[:8])
        say(f"different: {len(differing)} range(s) (offset+length): {shown}", sys.stdout)
    else:
        say("identical", sys.stdout)
    return EXIT_FAILED if differing else EXIT_OK


def _endpoint_options(
    args: argparse.Namespace,
    values: settings.Settings,
    ceph_conf: str | None,
    create: RbdCreate | None = None,
) -> EndpointOptions:
    """``[asyncopy]``'s endpoint options, and ``create`` for a new image; the flags given win."""
    if args.ceph_timeout is not None and not MIN_CEPH_TIMEOUT <= args.ceph_timeout <= MAX_TIMEOUT:
        raise UsageError(
            f"--ceph-timeout must be at least {MIN_CEPH_TIMEOUT} and at most {MAX_TIMEOUT}"
        )
    if args.iscsi_timeout is not None and not 0 < args.iscsi_timeout <= MAX_TIMEOUT:
        raise UsageError(f"--iscsi-timeout must be more than 0 and at most {MAX_TIMEOUT:.0f}")
    options = settings.endpoint_options(
        values,
        ceph_conf,
        ceph_timeout=args.ceph_timeout,
        iscsi_timeout=args.iscsi_timeout,
        root_helper=args.root_helper,
    )
    return options if create is None else replace(options, create=create)


def _settings(files: Sequence[str]) -> settings.Settings:
    """``[asyncopy]`` from the files given; without files, the defaults (and no oslo.config
    to import: a tenth of a second off every run)."""
    if not files:
        return settings.DEFAULTS
    from asyncopy.cinder import config

    return config.group(config.load(files))


def _size(text: str | None, what: str) -> int | None:
    return None if text is None else parse_size(text, what)


def _create_options(args: argparse.Namespace) -> RbdCreate | None:
    """How to create a missing rbd: destination, or None when no flag says (the defaults):
    then nothing of RBD is imported for other endpoints."""
    given = (args.object_size, args.image_features, args.data_pool)
    if all(value is None for value in given) and not args.keep_on_failure:
        return None
    from asyncopy.access.ceph import RbdCreate

    features = None
    if args.image_features is not None:
        features = tuple(name.strip() for name in args.image_features.split(",") if name.strip())
    create = RbdCreate(
        object_size=None
        if args.object_size is None
        else parse_size(args.object_size, "object size"),
        features=features,
        data_pool=args.data_pool,
        keep_on_failure=args.keep_on_failure,
    )
    create.order()  # bad input is found before anything is opened
    create.feature_bits()
    return create


def _describe(result: CopyResult) -> str:
    moved = result.bytes_total - result.bytes_unchanged
    rate = moved / result.seconds if result.seconds > 0 else 0.0
    return (
        f"copied {human(result.bytes_total)} in {result.seconds:.2f} s ({human(rate)}/s): "
        f"read {human(result.bytes_read)}, wrote {human(result.bytes_written)}, "
        f"zeroed {human(result.bytes_zeroed)}, skipped {human(result.bytes_skipped)}"
        + (f", already there {human(result.bytes_unchanged)}" if result.bytes_unchanged else "")
        + (f", verified (re-read {result.verify_seconds:.2f} s)" if result.verified else "")
    )


_DISPLAY: list[Display | None] = [None]  # the progress shown on stderr, if any


def _end_display() -> None:
    shown, _DISPLAY[0] = _DISPLAY[0], None
    if shown is not None:
        shown.close()


def _since(args: argparse.Namespace) -> Since | None:
    if args.since is None:
        if args.since_manifest is not None:
            raise UsageError("--since-manifest goes with --since")
        return None
    return Since(args.since, args.since_manifest)


def _rate_limit(text: str | None) -> RateLimit | None:
    """``--rate-limit SIZE/s`` (the ``/s`` optional) as a limit; None when not given."""
    if text is None:
        return None
    size = text[:-2] if text.lower().endswith("/s") else text
    rate = parse_size(size, "rate limit")
    if rate <= 0:
        raise UsageError(f"--rate-limit must be more than 0 bytes a second, not {text!r}")
    from asyncopy.core.rate import RateLimit

    return RateLimit(rate)


def _message(exc: BaseException) -> str:
    """The error and its notes (what cleanup could not do), on one line."""
    return "; ".join([str(exc), *getattr(exc, "__notes__", [])])


def _fail(message: str, code: int) -> int:
    _end_display()  # the error on a line of its own
    say(f"asyncopy: error: {message}", sys.stderr)
    return code


def _show_warning(
    message: Warning | str,
    category: type[Warning],
    filename: str,
    lineno: int,
    file: TextIO | None = None,
    line: str | None = None,
) -> None:
    """``warnings.showwarning`` for the command: the message alone, not where it was raised."""
    say(f"asyncopy: warning: {message}", sys.stderr)


def run() -> NoReturn:
    tune_for_copy()
    gc.enable()  # ``python -m asyncopy`` loads with it off; what it loaded is frozen now
    warnings.showwarning = _show_warning
    exit_process(main())
