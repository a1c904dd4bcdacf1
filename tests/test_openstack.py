"""The real deployment's tooling (``devtools.openstack``) on its failure path: a service that
does not come up is named, with its own last log lines, and nothing of the deployment is left
running. (Its success path is ``make e2e``: tempest against the running services.)"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from devtools import daemons, openstack

FAKE_MARIADBD = """#!/bin/sh
echo "mariadbd: cannot open the data directory (a stand-in that fails)" >&2
exit 1
"""


def test_a_service_that_does_not_start_is_named_and_nothing_is_left(tmp_path: Path) -> None:
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "mariadbd").write_text(FAKE_MARIADBD)
    (fake / "mariadbd").chmod(0o755)
    directory = tmp_path / "deployment"
    env = {**os.environ, "PATH": f"{fake}{os.pathsep}{os.environ['PATH']}"}
    done = subprocess.run(
        [sys.executable, "-m", "devtools.openstack", "up", str(directory)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert done.returncode == 2, done.stderr
    first = done.stderr.splitlines()[0]
    assert first.startswith("openstack: error: mariadb did not come up (mariadb exited)"), first
    assert "--- mariadb.out:" in done.stderr
    assert "a stand-in that fails" in done.stderr  # the service's own last words

    state = openstack.Deployment.load(directory)
    assert [d.name for d in state.daemons] == ["mariadb"]
    assert not any(daemons.alive(d) for d in state.daemons)
    assert openstack.marked(state) == []
    assert naming(directory) == []  # the Ceph cluster's daemons too
    done = subprocess.run(
        [sys.executable, "-m", "devtools.openstack", "down", str(directory)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert not directory.exists()


def naming(directory: Path) -> list[str]:
    """Command lines of running processes that name ``directory``."""
    found = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit() and int(proc.name) != os.getpid():
            try:
                line = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
            if str(directory) in line:
                found.append(line)
    return found
