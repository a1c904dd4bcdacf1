"""asyncopy: fast, verified volume copies between RBD, iSCSI, block devices and files."""

from asyncopy.api import copy_sync, copy_uri, verify_manifest, verify_uris
from asyncopy.endpoint import Extent, ExtentKind, Sink, Source, Volume, all_data
from asyncopy.engine import CopyOptions, CopyResult, Progress, copy
from asyncopy.errors import (
    AsyncopyError,
    CopyFailed,
    EndpointError,
    UsageError,
    VerificationFailed,
)
from asyncopy.uri import open_sink, open_source

__all__ = [
    "AsyncopyError",
    "CopyFailed",
    "CopyOptions",
    "CopyResult",
    "EndpointError",
    "Extent",
    "ExtentKind",
    "Progress",
    "Sink",
    "Source",
    "UsageError",
    "VerificationFailed",
    "Volume",
    "all_data",
    "copy",
    "copy_sync",
    "copy_uri",
    "open_sink",
    "open_source",
    "verify_manifest",
    "verify_uris",
]
