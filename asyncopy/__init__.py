"""asyncopy: fast, verified volume copies between RBD, iSCSI, block devices and files."""

from asyncopy.api import copy_sync, copy_uri, verify_manifest, verify_uris
from asyncopy.ceph import CephOptions
from asyncopy.endpoint import Extent, ExtentKind, Sink, Source, Volume, all_data
from asyncopy.engine import CopyOptions, CopyResult, Progress, copy
from asyncopy.errors import (
    AsyncopyError,
    CopyFailed,
    EndpointError,
    UsageError,
    VerificationFailed,
)
from asyncopy.sinks.rbd import RbdCreate
from asyncopy.uri import EndpointOptions, open_sink, open_source

__all__ = [
    "AsyncopyError",
    "CephOptions",
    "CopyFailed",
    "CopyOptions",
    "CopyResult",
    "EndpointError",
    "EndpointOptions",
    "Extent",
    "ExtentKind",
    "Progress",
    "RbdCreate",
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
