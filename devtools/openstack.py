"""A real OpenStack block-storage service on loopback, as an operator runs one: MariaDB,
RabbitMQ, Keystone, cinder-api, cinder-scheduler and two cinder-volume services, each its own
process, on 127.0.0.1, on free ports, with every file under one directory::

    python -m devtools.openstack up DIR [--manager asyncopy|stock]
    python -m devtools.openstack status DIR
    python -m devtools.openstack down DIR

The two cinder-volume services have different ``host`` names: ``rbd-host`` serves Cinder's
RBD driver on a private single-node Ceph (backend ``ceph``, and ``ceph-slow``, the same pool
with ``volume_copy_bps_limit`` set, for copies that must take a while), ``nfs-host`` Cinder's
NFS driver (backend ``nfs``) over a local directory bind-mounted where os-brick looks for the
mounted export (``nfs_mount_point_base/<md5 of the share>``: os-brick then finds it mounted,
and Debian's ``mount.nfs`` only has to exist). With ``--manager asyncopy`` (the default) both
have the one line the README's "From Cinder" tells an operator to add; ``stock`` is Cinder as
shipped. Keystone and cinder-api run under gunicorn; ``up`` returns once every service is up
through the API and the scheduler knows every backend's pool, and writes tempest
configurations for both backend orders (``tempest_conf`` in ``DIR/openstack.json``).

Everything started is recorded at once in ``DIR/openstack.json`` (pid and start time) and
carries ``DEVTOOLS_DEPLOYMENT=DIR`` in its environment: ``down`` stops the services in reverse
order, each with its whole process group, then ends any process still carrying the mark
(oslo.privsep's helpers, a copy's child), unmounts the share, stops the Ceph cluster and
removes DIR. Each start and stop is bounded in time; a service that does not come up is named
with the last lines of its log.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from contextlib import suppress
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from devtools import daemons, devstack
from devtools.daemons import Daemon, free_port, load_state, log_tails, save_state

STATE_FILE = "openstack.json"
MARK = "DEVTOOLS_DEPLOYMENT"
START_TIMEOUT = 180.0
STEP_TIMEOUT = 120.0
OSD_BYTES = 6 << 30
SLOW_LIMIT = 32 << 20  # ceph-slow's volume_copy_bps_limit, bytes a second
VOLUME_HOSTS = {"rbd-host": ("ceph", "ceph-slow"), "nfs-host": ("nfs",)}
BACKEND_ORDERS = (("ceph", "nfs"), ("nfs", "ceph"))
MANAGERS = {"asyncopy": "asyncopy.cinder.manager.VolumeManager", "stock": None}
REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
VENV_ETC = BIN.parent / "etc"

# command -> Debian package
REQUIRED = {
    "mariadbd": "mariadb-server",
    "mariadb-install-db": "mariadb-server",
    "epmd": "erlang-base",
    "mount.nfs": "nfs-common",
    "cgcreate": "cgroup-tools",
}
RABBITMQ_SERVER = Path("/usr/lib/rabbitmq/bin/rabbitmq-server")


class DeploymentError(Exception):
    """The deployment could not be started, inspected or stopped."""


@dataclass
class Deployment:
    """What ``up`` wrote to ``openstack.json``."""

    dir: str
    manager: str
    password: str
    ports: dict[str, int]
    rabbit_node: str
    auth_url: str = ""
    share: str = ""
    mount: str = ""
    tempest_workspace: str = ""
    tempest_conf: dict[str, str] = field(default_factory=dict)
    results_file: str = ""
    daemons: list[Daemon] = field(default_factory=list)

    @property
    def root(self) -> Path:
        return Path(self.dir)

    @property
    def ceph_dir(self) -> Path:
        return self.root / "ceph"

    def save(self) -> None:
        save_state(self.root / STATE_FILE, asdict(self))

    @classmethod
    def load(cls, directory: Path) -> Deployment:
        path = directory / STATE_FILE
        try:
            fields, started = load_state(path)
            return cls(**fields, daemons=started)
        except FileNotFoundError as exc:
            raise DeploymentError(
                f"{directory}: no deployment here ({STATE_FILE} missing)"
            ) from exc
        except (ValueError, TypeError) as exc:
            raise DeploymentError(f"{path}: not a deployment state file ({exc})") from exc

    def admin(self) -> dict[str, str]:
        """The admin's credentials, as keystoneauth's password plugin takes them."""
        return {
            "auth_url": self.auth_url,
            "username": "admin",
            "password": self.password,
            "project_name": "admin",
            "user_domain_name": "Default",
            "project_domain_name": "Default",
        }


def missing_packages() -> list[str]:
    """Debian packages whose commands are missing, in a stable order."""
    missing = {pkg for cmd, pkg in REQUIRED.items() if shutil.which(cmd) is None}
    if not RABBITMQ_SERVER.exists():
        missing.add("rabbitmq-server")
    return sorted(missing | set(devstack.missing_packages()))


def up(directory: Path, *, manager: str = "asyncopy", timeout: float = START_TIMEOUT) -> Deployment:
    """Start the deployment under ``directory`` (created, must be empty) and return it."""
    if manager not in MANAGERS:
        raise DeploymentError(f"no manager {manager!r}: one of {', '.join(MANAGERS)}")
    missing = missing_packages()
    if missing:
        raise DeploymentError(f"missing Debian packages: {' '.join(missing)}")
    directory = directory.resolve()
    if directory.exists() and any(directory.iterdir()):
        raise DeploymentError(f"{directory}: not empty; a deployment needs a directory of its own")
    for sub in ("log", "tmp", "run"):
        (directory / sub).mkdir(parents=True, exist_ok=True)
    names = ("mariadb", "amqp", "epmd", "erlang_dist", "keystone", "cinder_api")
    deployment = Deployment(
        dir=str(directory),
        manager=manager,
        password=secrets.token_hex(12),
        ports={name: free_port() for name in names},
        rabbit_node=f"rabbit-{secrets.token_hex(4)}@localhost",
    )
    deployment.auth_url = f"http://127.0.0.1:{deployment.ports['keystone']}/v3"
    deployment.save()  # from here on, down finds what to stop and may remove the directory
    deadline = time.monotonic() + timeout
    try:
        _start_all(deployment, deadline)
    except BaseException as failure:
        with suppress(DeploymentError):
            stop(deployment)
        raise failure
    return deployment


def _start_all(deployment: Deployment, deadline: float) -> None:
    devstack.up(deployment.ceph_dir, osd_bytes=OSD_BYTES, iscsi=False)
    _start_mariadb(deployment, deadline)
    _start_rabbitmq(deployment, deadline)
    _start_keystone(deployment, deadline)
    _register_cinder(deployment)
    _mount_share(deployment)
    _start_cinder(deployment, deadline)
    _write_tempest(deployment)
    deployment.save()


def down(directory: Path) -> None:
    """Stop what ``up`` started there and remove the directory; nothing there is fine.

    A directory without a deployment's state file is left alone: it is not ours.
    """
    directory = directory.resolve()
    if not directory.exists():
        return
    if not (directory / STATE_FILE).exists():
        raise DeploymentError(f"{directory}: no deployment here ({STATE_FILE} missing); left alone")
    stop(Deployment.load(directory))
    shutil.rmtree(directory, ignore_errors=True)


def stop(deployment: Deployment) -> None:
    """Stop every service, newest first, then whatever still carries the deployment's mark;
    unmount the share and stop the Ceph cluster."""
    stuck = [
        f"{daemon.name} (pid {daemon.pid})"
        for daemon in reversed(deployment.daemons)
        if not daemons.stop(daemon, grace=20.0, group=True)
    ]
    stuck += [f"pid {pid}" for pid in _end_marked(deployment)]
    if deployment.mount and _is_mounted(Path(deployment.mount)):
        done = subprocess.run(["umount", deployment.mount], capture_output=True, text=True)
        if done.returncode != 0:
            stuck.append(f"the share mounted at {deployment.mount} ({done.stderr.strip()})")
    _delete_cgroup(deployment)
    try:
        devstack.down(deployment.ceph_dir)
    except devstack.DevstackError as exc:
        stuck.append(str(exc))
    if stuck:
        raise DeploymentError(f"could not stop {', '.join(stuck)}")


def marked(deployment: Deployment) -> list[int]:
    """Processes carrying this deployment's mark in their environment."""
    needle = f"{MARK}={deployment.dir}\0".encode()
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        with suppress(OSError):
            if needle in (proc / "environ").read_bytes() + b"\0":
                found.append(int(proc.name))
    return found


def _end_marked(deployment: Deployment) -> list[int]:
    """SIGKILL every marked process left; the pids that would not go."""
    for pid in marked(deployment):
        with suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    end = time.monotonic() + 5.0
    while (left := marked(deployment)) and time.monotonic() < end:
        time.sleep(0.1)
    return left


def status(directory: Path) -> dict[str, Any]:
    """Which services are alive, and what the block-storage API says of them."""
    deployment = Deployment.load(directory.resolve())
    alive = {daemon.name: daemons.alive(daemon) for daemon in deployment.daemons}
    try:
        services = _services(deployment)
    except Exception as exc:  # reported, not raised: status describes
        services = {"error": str(exc)}
    return {"dir": deployment.dir, "alive": alive, "services": services}


# -- processes ------------------------------------------------------------------------------


def _environ(deployment: Deployment, **extra: str) -> dict[str, str]:
    path = f"{BIN}{os.pathsep}{os.environ.get('PATH', '/usr/sbin:/usr/bin:/sbin:/bin')}"
    return {
        **os.environ,
        MARK: deployment.dir,
        "PATH": path,
        "PYTHONPATH": str(REPO),
        "TMPDIR": str(deployment.root / "tmp"),
        **extra,
    }


def _start(
    deployment: Deployment, name: str, args: Sequence[str], env: Mapping[str, str] | None = None
) -> None:
    """Start a service and record it at once, so that ``down`` finds it whatever happens."""
    env = env if env is not None else _environ(deployment)
    deployment.daemons.append(daemons.spawn(name, args, deployment.root, env))
    deployment.save()


def _run(deployment: Deployment, args: Sequence[str], env: Mapping[str, str] | None = None) -> str:
    """Run a setup command; its failure is a DeploymentError with its last lines."""
    try:
        done = subprocess.run(
            args,
            cwd=deployment.root,
            env=env if env is not None else _environ(deployment),
            capture_output=True,
            text=True,
            timeout=STEP_TIMEOUT,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise DeploymentError(f"{Path(args[0]).name}: {exc}") from exc
    if done.returncode != 0:
        lines = (done.stderr or done.stdout).strip().splitlines()[-5:]
        raise DeploymentError(
            f"{Path(args[0]).name} {' '.join(args[1:3])}: exit {done.returncode}: "
            + " / ".join(lines)
        )
    return done.stdout


def _until(deployment: Deployment, what: str, deadline: float, check: Callable[[], bool]) -> None:
    """Wait until ``check()`` is true; fail naming ``what`` and the logs of the dead or the
    last started services when a service exits or the deadline passes."""
    last: Exception | None = None
    while True:
        try:
            if check():
                return
        except Exception as exc:  # a service still starting answers anyhow
            last = exc
        dead = [d.name for d in deployment.daemons if not daemons.alive(d)]
        if dead or time.monotonic() >= deadline:
            why = f"{', '.join(dead)} exited" if dead else "timed out"
            names = dead or [d.name for d in deployment.daemons[-1:]]
            detail = f": {last}" if last else ""
            tails = log_tails(deployment.root, lines=8, names=names)
            raise DeploymentError(f"{what} did not come up ({why}){detail}{tails}")
        time.sleep(0.5)


# -- MariaDB --------------------------------------------------------------------------------


def _start_mariadb(deployment: Deployment, deadline: float) -> None:
    data, socket_path = deployment.root / "mariadb", deployment.root / "run" / "mariadb.sock"
    _run(
        deployment,
        [
            "mariadb-install-db",
            "--no-defaults",
            "--user=root",
            f"--datadir={data}",
            "--auth-root-authentication-method=normal",
            "--skip-test-db",
        ],
    )
    _start(
        deployment,
        "mariadb",
        [
            "mariadbd",
            "--no-defaults",
            "--user=root",
            f"--datadir={data}",
            f"--socket={socket_path}",
            f"--port={deployment.ports['mariadb']}",
            "--bind-address=127.0.0.1",
            "--skip-name-resolve",
            "--innodb-buffer-pool-size=64M",
            f"--pid-file={deployment.root / 'run' / 'mariadb.pid'}",
        ],
    )
    sql = ["mariadb", "--no-defaults", f"--socket={socket_path}", "-uroot", "-e"]
    _until(deployment, "mariadb", deadline, lambda: bool(_run(deployment, [*sql, "SELECT 1"])))
    statements = [
        f"CREATE USER 'openstack'@'127.0.0.1' IDENTIFIED BY '{deployment.password}'",
        *(f"CREATE DATABASE {name}" for name in ("keystone", "cinder")),
        *(f"GRANT ALL ON {name}.* TO 'openstack'@'127.0.0.1'" for name in ("keystone", "cinder")),
    ]
    _run(deployment, [*sql, "; ".join(statements)])


def _database(deployment: Deployment, name: str) -> str:
    port = deployment.ports["mariadb"]
    return f"mysql+pymysql://openstack:{deployment.password}@127.0.0.1:{port}/{name}"


# -- RabbitMQ -------------------------------------------------------------------------------


def _start_rabbitmq(deployment: Deployment, deadline: float) -> None:
    home = deployment.root / "rabbitmq"
    for sub in ("mnesia", "log", "plugins"):
        (home / sub).mkdir(parents=True, exist_ok=True)
    (home / "enabled_plugins").write_text("[].\n")
    (home / "rabbitmq-env.conf").write_text("")
    epmd = {"ERL_EPMD_ADDRESS": "127.0.0.1", "ERL_EPMD_PORT": str(deployment.ports["epmd"])}
    env = _environ(
        deployment,
        HOME=str(home),
        RABBITMQ_NODENAME=deployment.rabbit_node,
        RABBITMQ_NODE_IP_ADDRESS="127.0.0.1",
        RABBITMQ_NODE_PORT=str(deployment.ports["amqp"]),
        RABBITMQ_DIST_PORT=str(deployment.ports["erlang_dist"]),
        RABBITMQ_MNESIA_BASE=str(home / "mnesia"),
        RABBITMQ_LOG_BASE=str(home / "log"),
        RABBITMQ_LOGS="-",
        RABBITMQ_CONF_ENV_FILE=str(home / "rabbitmq-env.conf"),
        RABBITMQ_CONFIG_FILE=str(home / "rabbitmq"),
        RABBITMQ_ADVANCED_CONFIG_FILE=str(home / "advanced.config"),
        RABBITMQ_ENABLED_PLUGINS_FILE=str(home / "enabled_plugins"),
        RABBITMQ_PLUGINS_EXPAND_DIR=str(home / "plugins"),
        RABBITMQ_PID_FILE=str(deployment.root / "run" / "rabbitmq.pid"),
        RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}",
        **epmd,
    )
    _start(deployment, "epmd", ["epmd", "-port", epmd["ERL_EPMD_PORT"]], env)
    _start(deployment, "rabbitmq", [str(RABBITMQ_SERVER)], env)
    _until(deployment, "rabbitmq", deadline, lambda: _amqp_answers(deployment.ports["amqp"]))


def _transport_url(deployment: Deployment) -> str:
    return f"rabbit://guest:guest@127.0.0.1:{deployment.ports['amqp']}/"


def _amqp_answers(port: int) -> bool:
    """The broker answers AMQP 0-9-1's protocol header with a method frame (Connection.Start)."""
    with socket.create_connection(("127.0.0.1", port), timeout=2) as sock:
        sock.sendall(b"AMQP\x00\x00\x09\x01")
        return sock.recv(1) == b"\x01"


# -- Keystone -------------------------------------------------------------------------------


def _start_keystone(deployment: Deployment, deadline: float) -> None:
    home = deployment.root / "keystone"
    home.mkdir()
    conf = home / "keystone.conf"
    conf.write_text(
        f"""[DEFAULT]
use_stderr = true

[database]
connection = {_database(deployment, "keystone")}

[token]
provider = fernet

[fernet_tokens]
key_repository = {home / "fernet-keys"}

[fernet_receipts]
key_repository = {home / "fernet-keys"}

[credential]
key_repository = {home / "credential-keys"}
"""
    )
    manage = [str(BIN / "keystone-manage"), "--config-file", str(conf)]
    owner = ["--keystone-user", "root", "--keystone-group", "root"]
    _run(deployment, [*manage, "db_sync"])
    _run(deployment, [*manage, "fernet_setup", *owner])
    _run(deployment, [*manage, "credential_setup", *owner])
    url = deployment.auth_url
    _run(
        deployment,
        [
            *manage,
            "bootstrap",
            "--bootstrap-password",
            deployment.password,
            "--bootstrap-region-id",
            "RegionOne",
            *(
                arg
                for kind in ("admin", "public", "internal")
                for arg in (f"--bootstrap-{kind}-url", url)
            ),
        ],
    )
    env = _environ(deployment, OS_KEYSTONE_CONFIG_FILES=str(conf))
    _start(deployment, "keystone", _gunicorn(deployment.ports["keystone"], "keystone"), env)
    _until(deployment, "keystone", deadline, lambda: _http_ok(url))


def _gunicorn(port: int, name: str) -> list[str]:
    return [
        str(BIN / "python"),
        "-m",
        "gunicorn",
        "--no-control-socket",
        "--bind",
        f"127.0.0.1:{port}",
        "--workers",
        "1",
        "--threads",
        "4",
        "--timeout",
        "300",
        f"devtools.wsgi:app({name!r})",
    ]


def _http_ok(url: str) -> bool:
    import urllib.request

    with urllib.request.urlopen(url, timeout=5) as response:
        return bool(200 <= response.status < 400)


def _connection(deployment: Deployment) -> Any:
    import openstack

    connect: Any = openstack.connect
    return connect(
        **deployment.admin(),
        region_name="RegionOne",
        identity_api_version="3",
        load_yaml_config=False,
    )


def _register_cinder(deployment: Deployment) -> None:
    """The ``service`` project, Cinder's service user, and the block-storage v3 endpoints."""
    cloud = _connection(deployment)
    identity = cloud.identity
    project = identity.create_project(name="service", domain_id="default")
    user = identity.create_user(
        name="cinder",
        password=deployment.password,
        domain_id="default",
        default_project_id=project.id,
    )
    for role in ("admin", "service"):
        identity.assign_project_role_to_user(project, user, identity.find_role(role))
    service = identity.create_service(name="cinderv3", type="block-storage")
    url = f"http://127.0.0.1:{deployment.ports['cinder_api']}/v3/%(project_id)s"
    for interface in ("public", "internal", "admin"):
        identity.create_endpoint(
            service_id=service.id, interface=interface, url=url, region_id="RegionOne"
        )
    cloud.close()


# -- Cinder ---------------------------------------------------------------------------------


def _mount_share(deployment: Deployment) -> None:
    """The NFS backend's export: a local directory, bind-mounted where os-brick looks."""
    export = deployment.root / "nfs" / "export"
    base = deployment.root / "nfs" / "mnt"
    export.mkdir(parents=True)
    deployment.share = f"127.0.0.1:{export}"
    digest = hashlib.md5(deployment.share.encode(), usedforsecurity=False).hexdigest()
    point = base / digest
    point.mkdir(parents=True)
    deployment.mount = str(point)
    deployment.save()  # before mounting: down unmounts it whatever happens next
    subprocess.run(["mount", "--bind", str(export), str(point)], check=True, capture_output=True)
    (deployment.root / "nfs" / "shares").write_text(deployment.share + "\n")


def _cgroup(deployment: Deployment) -> str:
    return f"devtools-{Path(deployment.dir).name}-{deployment.ports['cinder_api']}"


def _delete_cgroup(deployment: Deployment) -> None:
    """The blkio cgroup Cinder's throttle creates with ``cgcreate``, if it did."""
    if Path("/sys/fs/cgroup/blkio", _cgroup(deployment)).is_dir():
        subprocess.run(["cgdelete", f"blkio:/{_cgroup(deployment)}"], capture_output=True)


def _cinder_conf(deployment: Deployment) -> str:
    """What every Cinder service reads; the manager line as the README tells an operator."""
    manager = MANAGERS[deployment.manager]
    manager_line = f"volume_manager = {manager}\n" if manager else ""
    state = deployment.root / "cinder"
    return f"""[DEFAULT]
{manager_line}transport_url = {_transport_url(deployment)}
auth_strategy = keystone
state_path = {state / "state"}
api_paste_config = {VENV_ETC / "cinder" / "api-paste.ini"}
rootwrap_config = {VENV_ETC / "cinder" / "rootwrap.conf"}
my_ip = 127.0.0.1
use_stderr = true

[database]
connection = {_database(deployment, "cinder")}

[oslo_concurrency]
lock_path = {state / "locks"}

[keystone_authtoken]
www_authenticate_uri = {deployment.auth_url}
auth_url = {deployment.auth_url}
auth_type = password
username = cinder
password = {deployment.password}
project_name = service
user_domain_name = Default
project_domain_name = Default
"""


def _volume_conf(deployment: Deployment, host: str, files: Sequence[Path]) -> str:
    """One cinder-volume service's own part: its host name and backends."""
    helper = " ".join([str(BIN / "privsep-helper"), *(f"--config-file {f}" for f in files)])
    sections = "".join(_backend(deployment, name) for name in VOLUME_HOSTS[host])
    return f"""[DEFAULT]
host = {host}
enabled_backends = {",".join(VOLUME_HOSTS[host])}
{sections}
[privsep_osbrick]
helper_command = {helper}

[cinder_sys_admin]
helper_command = {helper}
"""


def _backend(deployment: Deployment, name: str) -> str:
    ceph = deployment.ceph_dir / "ceph.conf"
    if name == "nfs":
        return f"""
[nfs]
volume_driver = cinder.volume.drivers.nfs.NfsDriver
volume_backend_name = nfs
nfs_shares_config = {deployment.root / "nfs" / "shares"}
nfs_mount_point_base = {Path(deployment.mount).parent}
nfs_sparsed_volumes = true
nfs_snapshot_support = true
nas_secure_file_operations = false
nas_secure_file_permissions = false
"""
    throttle = ""
    if name == "ceph-slow":
        throttle = (
            f"volume_copy_bps_limit = {SLOW_LIMIT}\n"
            f"volume_copy_blkio_cgroup_name = {_cgroup(deployment)}\n"
        )
    return f"""
[{name}]
volume_driver = cinder.volume.drivers.rbd.RBDDriver
volume_backend_name = {name}
rbd_ceph_conf = {ceph}
rbd_pool = {devstack.POOL}
{throttle}"""


def _start_cinder(deployment: Deployment, deadline: float) -> None:
    home = deployment.root / "cinder"
    for sub in ("state", "locks"):
        (home / sub).mkdir(parents=True, exist_ok=True)
    conf = home / "cinder.conf"
    conf.write_text(_cinder_conf(deployment))
    _run(deployment, [str(BIN / "cinder-manage"), "--config-file", str(conf), "db", "sync"])
    env = _environ(deployment, DEVTOOLS_WSGI_CONFIG=str(conf))
    _start(deployment, "cinder-api", _gunicorn(deployment.ports["cinder_api"], "cinder"), env)
    _start(
        deployment, "cinder-scheduler", [str(BIN / "cinder-scheduler"), "--config-file", str(conf)]
    )
    for host in VOLUME_HOSTS:
        own = home / f"{host}.conf"
        own.write_text(_volume_conf(deployment, host, (conf, own)))
        args = [str(BIN / "cinder-volume"), "--config-file", str(conf), "--config-file", str(own)]
        _start(deployment, f"cinder-volume-{host}", args)
    _until(deployment, "cinder", deadline, lambda: _cinder_ready(deployment))


def _services(deployment: Deployment) -> dict[str, str]:
    """``binary host`` -> state, as the block-storage API lists its services."""
    cloud = _connection(deployment)
    try:
        listed = cloud.block_storage.get("/os-services").json()["services"]
        return {f"{s['binary']} {s['host']}": s["state"] for s in listed}
    finally:
        cloud.close()


def _pools(deployment: Deployment) -> list[str]:
    cloud = _connection(deployment)
    try:
        listed = cloud.block_storage.get("/scheduler-stats/get_pools").json()["pools"]
        return sorted(pool["name"] for pool in listed)
    finally:
        cloud.close()


def expected_pools() -> list[str]:
    """Each backend's one pool, as Cinder names it: ``HOST@BACKEND#POOL``."""
    return sorted(f"{h}@{b}#{b}" for h, names in VOLUME_HOSTS.items() for b in names)


def _cinder_ready(deployment: Deployment) -> bool:
    """Every service up through the API, and the scheduler knows every backend's pool."""
    running = {name for name, state in _services(deployment).items() if state == "up"}
    volumes = {f"cinder-volume {h}@{b}" for h, names in VOLUME_HOSTS.items() for b in names}
    scheduler = any(name.startswith("cinder-scheduler ") for name in running)
    return scheduler and volumes <= running and _pools(deployment) == expected_pools()


# -- tempest --------------------------------------------------------------------------------


def tempest_environ(deployment: Deployment) -> dict[str, str]:
    """Where tempest runs: its own HOME (``tempest init`` writes ``~/.tempest``)."""
    return _environ(deployment, HOME=str(deployment.root / "tempest"))


def _write_tempest(deployment: Deployment) -> None:
    """A tempest workspace and one configuration per backend order."""
    home = deployment.root / "tempest"
    workspace = home / "workspace"
    home.mkdir()
    env = tempest_environ(deployment)
    _run(
        deployment,
        [
            str(BIN / "tempest"),
            "init",
            "--workspace-path",
            str(home / "workspace.yaml"),
            str(workspace),
        ],
        env,
    )
    deployment.tempest_workspace = str(workspace)
    deployment.results_file = str(deployment.root / "results.jsonl")
    for order in BACKEND_ORDERS:
        name = ",".join(order)
        path = workspace / "etc" / f"tempest-{'-'.join(order)}.conf"
        path.write_text(_tempest_conf(deployment, name))
        deployment.tempest_conf[name] = str(path)


def _tempest_conf(deployment: Deployment, backend_names: str) -> str:
    return f"""[DEFAULT]
log_dir = {deployment.tempest_workspace}/logs
use_stderr = false

[auth]
admin_username = admin
admin_password = {deployment.password}
admin_project_name = admin
admin_domain_name = Default
use_dynamic_credentials = true

[identity]
uri_v3 = {deployment.auth_url}
auth_version = v3
region = RegionOne
disable_ssl_certificate_validation = true

[identity-feature-enabled]
api_v2 = false

[service_available]
cinder = true
nova = false
glance = false
neutron = false
swift = false

[validation]
run_validation = false

[volume]
catalog_type = block-storage
backend_names = {backend_names}
build_timeout = 600

[volume-feature-enabled]
multi_backend = true
snapshot = true
backup = false

[asyncopy]
manager = {deployment.manager}
results_file = {deployment.results_file}
throttled_backend = ceph-slow
"""


def _is_mounted(path: Path) -> bool:
    with open("/proc/self/mounts") as mounts:
        return any(line.split()[1] == str(path) for line in mounts if line.strip())


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m devtools.openstack up|status|down DIR``: 0 done (``status``: all alive and
    up), 1 not, 2 an error, in one line (and the failing service's last log lines)."""
    parser = argparse.ArgumentParser(prog="python -m devtools.openstack", description=__doc__)
    parser.add_argument("action", choices=("up", "status", "down"))
    parser.add_argument("dir", type=Path, help="directory holding all of the deployment's state")
    parser.add_argument("--manager", choices=tuple(MANAGERS), default="asyncopy")
    args = parser.parse_args(argv)
    try:
        if args.action == "up":
            started = time.monotonic()
            deployment = up(args.dir, manager=args.manager)
            print(
                json.dumps(
                    {**asdict(deployment), "seconds": round(time.monotonic() - started, 1)},
                    indent=2,
                )
            )
        elif args.action == "status":
            state = status(args.dir)
            print(json.dumps(state, indent=2))
            return 0 if all(state["alive"].values()) else 1
        else:
            down(args.dir)
    except (DeploymentError, devstack.DevstackError) as exc:
        print(f"openstack: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
