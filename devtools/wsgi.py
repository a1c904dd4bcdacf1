"""WSGI applications for gunicorn: Keystone's and cinder-api's, e.g.
``gunicorn "devtools.wsgi:app('cinder')"``.

Both parse the process's own command line when they load: under gunicorn that is gunicorn's
(``-b ...``), which they refuse. The command line is reset first; cinder-api's configuration
files are named by ``DEVTOOLS_WSGI_CONFIG`` (``;``-separated), Keystone's by its own
``OS_KEYSTONE_CONFIG_FILES``.
"""

from __future__ import annotations

import os
import sys
from typing import Any

CONFIG_VARIABLE = "DEVTOOLS_WSGI_CONFIG"


def app(name: str) -> Any:
    """The WSGI application of ``keystone`` or ``cinder``."""
    files = [item for item in os.environ.get(CONFIG_VARIABLE, "").split(";") if item]
    sys.argv = [sys.argv[0], *(arg for path in files for arg in ("--config-file", path))]
    if name == "keystone":
        from keystone.wsgi.api import application
    elif name == "cinder":
        from cinder.wsgi.api import application
    else:
        raise ValueError(f"no WSGI application named {name!r}")
    return application
