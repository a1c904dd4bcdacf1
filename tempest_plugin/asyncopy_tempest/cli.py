"""What an operator sees: python-openstackclient's ``openstack volume show``, run as a command.

The admin credentials come from tempest's configuration (``[auth] admin_*`` and
``[identity] uri_v3``) in the ``OS_*`` environment variables the client reads.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from tempest import config

CONF = config.CONF
TIMEOUT = 120.0  # seconds for one command


def openstack_command() -> str:
    """The ``openstack`` beside this Python, else the first on PATH."""
    beside = Path(sys.executable).parent / "openstack"
    if beside.exists():
        return str(beside)
    found = shutil.which("openstack")
    if found is None:
        raise FileNotFoundError("no openstack command beside this Python or on PATH")
    return found


def admin_environment() -> dict[str, str]:
    """The ``OS_*`` variables naming tempest's admin credentials and endpoint."""
    domain = CONF.auth.admin_domain_name or "Default"
    given = {
        "OS_AUTH_URL": CONF.identity.uri_v3,
        "OS_IDENTITY_API_VERSION": "3",
        "OS_USERNAME": CONF.auth.admin_username,
        "OS_PASSWORD": CONF.auth.admin_password,
        "OS_PROJECT_NAME": CONF.auth.admin_project_name,
        "OS_USER_DOMAIN_NAME": domain,
        "OS_PROJECT_DOMAIN_NAME": domain,
        "OS_REGION_NAME": CONF.identity.region,
        "OS_INTERFACE": CONF.volume.endpoint_type.removesuffix("URL"),
        "OS_VOLUME_API_VERSION": "3",
    }
    inherited = {key: value for key, value in os.environ.items() if not key.startswith("OS_")}
    return inherited | {key: value for key, value in given.items() if value}


def volume_show(volume_id: str) -> dict[str, Any]:
    """``openstack volume show ID -f json``, as the admin.

    Raises:
        RuntimeError: the command failed; the error holds its exit status and stderr.
    """
    command = [openstack_command(), "volume", "show", volume_id, "-f", "json"]
    done = subprocess.run(
        command, env=admin_environment(), capture_output=True, text=True, timeout=TIMEOUT
    )
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} exited {done.returncode}: {done.stderr.strip()}")
    shown: dict[str, Any] = json.loads(done.stdout)
    return shown


def property_of(shown: dict[str, Any], key: str) -> str | None:
    """The volume's ``key`` property as shown (a mapping, or its text form), if shown."""
    properties = shown.get("properties") or {}
    if isinstance(properties, dict):
        value = properties.get(key)
        return None if value is None else str(value)
    text = str(properties)
    return text if key in text else None
