"""The ``asyncopy`` command.

Exit codes: 0 success (for ``verify``: identical), 1 copy failed or (for ``verify``)
different, 2 bad input or error (as ``qemu-img compare``), 130 interrupted. Errors are one
line on stderr, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import NoReturn

import trio

from asyncopy.api import copy_uri, verify_manifest, verify_uris
from asyncopy.engine import (
    DEFAULT_CHUNK_SIZE,
    DEFAULT_DEPTH,
    DEFAULT_MAX_INFLIGHT,
    DEFAULT_SPARSE_SIZE,
    CopyOptions,
    CopyResult,
    Progress,
)
from asyncopy.errors import AsyncopyError, CopyFailed, UsageError
from asyncopy.sizes import human, parse_size

EXIT_OK, EXIT_FAILED, EXIT_ERROR, EXIT_INTERRUPTED = 0, 1, 2, 130


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UsageError(message)


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="asyncopy", description="Fast, verified volume copies.")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    cp = commands.add_parser("copy", help="copy SRC onto DST")
    cp.add_argument("src", help="source: a path or file:PATH")
    cp.add_argument("dst", help="destination: a path (created if missing) or file:PATH")
    cp.add_argument("--verify", action="store_true", help="re-read DST and compare digests")
    cp.add_argument("--manifest", type=Path, help="write the source's digests to this file")
    cp.add_argument("--chunk-size", default=str(DEFAULT_CHUNK_SIZE), help="I/O and digest unit")
    cp.add_argument("--depth", type=int, default=DEFAULT_DEPTH, help="chunks in flight")
    cp.add_argument("--max-inflight", default=str(DEFAULT_MAX_INFLIGHT), help="buffer budget")
    cp.add_argument(
        "--sparse-size",
        default=str(DEFAULT_SPARSE_SIZE),
        help="zero-detection granularity; 0 writes every byte",
    )
    cp.add_argument(
        "--target-is-zero",
        action="store_true",
        help="assert DST already reads as zeros: its holes are skipped",
    )
    cp.add_argument("--json", action="store_true", help="print one JSON object")
    cp.add_argument("--progress", action="store_true", help="show progress on stderr")

    vf = commands.add_parser("verify", help="compare A with B, or A with a manifest")
    vf.add_argument("a", help="endpoint to check")
    vf.add_argument("b", nargs="?", help="endpoint to compare with")
    vf.add_argument("--manifest", type=Path, help="manifest to check A against")
    vf.add_argument("--chunk-size", default=str(DEFAULT_CHUNK_SIZE), help="digest unit")
    vf.add_argument("--depth", type=int, default=DEFAULT_DEPTH, help="chunks in flight")
    vf.add_argument("--json", action="store_true", help="print one JSON object")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = _parser().parse_args(argv)
        if args.command == "copy":
            return _copy(args)
        return _verify(args)
    except UsageError as exc:
        return _fail(str(exc), EXIT_ERROR)
    except CopyFailed as exc:
        return _fail(str(exc), EXIT_FAILED if args.command == "copy" else EXIT_ERROR)
    except AsyncopyError as exc:
        return _fail(str(exc), EXIT_ERROR)
    except KeyboardInterrupt:
        return _fail("interrupted", EXIT_INTERRUPTED)


def _copy(args: argparse.Namespace) -> int:
    options = CopyOptions(
        chunk_size=parse_size(args.chunk_size, "chunk size"),
        depth=args.depth,
        max_inflight_bytes=parse_size(args.max_inflight, "in-flight size"),
        sparse_size=parse_size(args.sparse_size, "sparse size"),
        verify=args.verify,
    )
    job = partial(
        copy_uri,
        args.src,
        args.dst,
        options,
        target_is_zero=args.target_is_zero,
        manifest=args.manifest,
        progress=_show_progress if args.progress else None,
    )
    result = trio.run(job)
    if args.json:
        print(json.dumps(result.summary()))
    else:
        print(_describe(result))
    return EXIT_OK


def _verify(args: argparse.Namespace) -> int:
    if (args.b is None) == (args.manifest is None):
        raise UsageError("verify takes A B, or --manifest PATH A")
    chunk_size = parse_size(args.chunk_size, "chunk size")
    if args.depth <= 0 or chunk_size <= 0:
        raise UsageError("chunk size and depth must be positive")
    if args.manifest is not None:
        differing = trio.run(verify_manifest, args.manifest, args.a, args.depth)
    else:
        differing = trio.run(verify_uris, args.a, args.b, chunk_size, args.depth)
    if args.json:
        ranges = [{"offset": offset, "length": length} for offset, length in differing]
        print(json.dumps({"identical": not differing, "differing": ranges}))
    elif differing:
        shown = ", ".join(f"{offset}+{length}" for offset, length in differing[:8])
        print(f"different: {len(differing)} range(s) (offset+length): {shown}")
    else:
        print("identical")
    return EXIT_FAILED if differing else EXIT_OK


def _describe(result: CopyResult) -> str:
    rate = result.bytes_total / result.seconds if result.seconds > 0 else 0.0
    return (
        f"copied {human(result.bytes_total)} in {result.seconds:.2f} s ({human(rate)}/s): "
        f"read {human(result.bytes_read)}, wrote {human(result.bytes_written)}, "
        f"zeroed {human(result.bytes_zeroed)}, skipped {human(result.bytes_skipped)}"
        + (", verified" if result.verified else "")
    )


def _show_progress(progress: Progress) -> None:
    percent = 100.0 * progress.done / progress.total if progress.total else 100.0
    print(f"\r{percent:5.1f}% of {human(progress.total)}", end="", file=sys.stderr, flush=True)
    if progress.done >= progress.total:
        print(file=sys.stderr)


def _fail(message: str, code: int) -> int:
    print(f"asyncopy: error: {message}", file=sys.stderr)
    return code


def run() -> NoReturn:
    sys.exit(main())
