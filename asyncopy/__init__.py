"""asyncopy: fast, verified volume copies between RBD, iSCSI, block devices and files.

The names below load on first use (PEP 562), so that ``import asyncopy.cinder`` works in a
process that eventlet has monkey-patched, where trio cannot be imported at all.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from asyncopy.access.ceph import CephOptions, RbdCreate
    from asyncopy.api import copy_sync, copy_uri, verify_manifest, verify_uris
    from asyncopy.core.endpoint import Extent, ExtentKind, Sink, Source, Volume, all_data
    from asyncopy.core.engine import CopyOptions, CopyResult, copy
    from asyncopy.core.progress import Progress
    from asyncopy.errors import (
        AsyncopyError,
        CopyFailed,
        EndpointError,
        UsageError,
        VerificationFailed,
    )
    from asyncopy.specs import EndpointOptions, open_sink, open_source

_WHERE = {
    "asyncopy.api": ["copy_sync", "copy_uri", "verify_manifest", "verify_uris"],
    "asyncopy.access.ceph": ["CephOptions", "RbdCreate"],
    "asyncopy.core.endpoint": ["Extent", "ExtentKind", "Sink", "Source", "Volume", "all_data"],
    "asyncopy.core.engine": ["CopyOptions", "CopyResult", "copy"],
    "asyncopy.core.progress": ["Progress"],
    "asyncopy.errors": [
        "AsyncopyError",
        "CopyFailed",
        "EndpointError",
        "UsageError",
        "VerificationFailed",
    ],
    "asyncopy.specs": ["EndpointOptions", "open_sink", "open_source"],
}
_MODULE_OF = {name: module for module, names in _WHERE.items() for name in names}

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


def __getattr__(name: str) -> Any:
    module = _MODULE_OF.get(name)
    if module is None:
        raise AttributeError(f"module 'asyncopy' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
