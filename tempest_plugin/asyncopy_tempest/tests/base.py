"""What every migration test does: fill a volume, move it, read it back, look for leftovers.

A volume is filled through a local attach with the data of a ``pattern.Model`` and read
back whole; after the move (``os-migrate_volume`` or ``os-retype`` on demand) has ended
``success``, it is attached again and read back whole against the same model, its
allocation is compared with the source's (in the coarser of their allocation units), and
Cinder must have left nothing behind: the volume available with no attachment record, no
temporary volume from the migration. Each move is recorded in ``[asyncopy] results_file``
before anything about it is asserted.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar

from oslo_log import log as logging
from tempest import config
from tempest.api.volume import base
from tempest.lib import decorators

from asyncopy_tempest import attach, cli, pattern, results

CONF = config.CONF
LOG = logging.getLogger(__name__)
MiB = pattern.MiB
GiB = 1 << 30
POLL_INTERVAL = 1.0  # seconds between looks at a migrating volume
ALLOCATION_SLACK = MiB  # what a destination may hold beyond its source
MIGSTAT = "os-vol-mig-status-attr:migstat"
HOST = "os-vol-host-attr:host"
TEMPORARY_PREFIX = "migration src for"
PROGRESS_KEY = "migration_progress"
ATTACHMENTS_MICROVERSION = "volume 3.27"  # the attachments API

Test = TypeVar("Test", bound=Callable[..., Any])


def idempotent_id(uuid: str) -> Callable[[Test], Test]:
    """Tempest's ``decorators.idempotent_id``, typed."""
    decorate: Callable[[Test], Test] = decorators.idempotent_id(uuid)
    return decorate


@dataclass(frozen=True, slots=True)
class Pool:
    """A backend's pool as the scheduler lists it."""

    backend: str
    name: str  # HOST@BACKEND#POOL, what os-migrate_volume takes
    protocol: str  # the backend's storage_protocol, lower case

    @property
    def host(self) -> str:
        return self.name.partition("#")[0]


@dataclass(frozen=True, slots=True)
class Move:
    """One migration requested: ``kind`` "migrate", or "retype" to ``new_type``."""

    kind: str
    source: Pool
    destination: Pool
    new_type: str | None = None


@dataclass(frozen=True, slots=True)
class Readback:
    """A volume read back whole: the first byte that differs from the model, if any, and
    its allocation (bytes as its backend counts them; where, in units of ``grain``)."""

    difference: int | None
    allocated: int
    ranges: tuple[tuple[int, int], ...]
    grain: int


def read_whole(volume: attach.Volume, model: pattern.Model) -> Readback:
    difference = pattern.first_difference(model, volume.read)
    ranges = tuple(volume.allocated_ranges())
    return Readback(difference, volume.allocated(), ranges, volume.grain)


class ProgressWatch:
    """Looks at a volume as an operator does (``openstack volume show``), once per call."""

    def __init__(self, volume_id: str) -> None:
        self.volume_id = volume_id
        self.looks = 0
        self.shown: list[str] = []  # every migration_progress seen, in order

    @property
    def seen(self) -> bool:
        return bool(self.shown)

    def __call__(self) -> None:
        self.looks += 1
        text = self.progress()
        if text is not None:
            LOG.info("volume %s shows %s: %s", self.volume_id, PROGRESS_KEY, text)
            self.shown.append(text)

    def progress(self) -> str | None:
        return cli.property_of(cli.volume_show(self.volume_id), PROGRESS_KEY)


def host_of(volume: dict[str, Any]) -> str:
    return str(volume[HOST] or "").partition("#")[0]


class MigrationTestBase(base.BaseVolumeAdminTest):  # type: ignore[misc]
    """Admin volume tests that move volumes between ``[volume] backend_names``."""

    pools: ClassVar[dict[str, Pool]]
    backend_types: ClassVar[dict[str, dict[str, Any]]]
    untyped: ClassVar[dict[str, Any]]

    @classmethod
    def skip_checks(cls) -> None:
        super().skip_checks()
        if not CONF.volume_feature_enabled.multi_backend:
            raise cls.skipException("Cinder multi-backend feature disabled")

    @classmethod
    def resource_setup(cls) -> None:
        super().resource_setup()
        names = list(dict.fromkeys(CONF.volume.backend_names))
        if len(names) < 2:
            raise ValueError(f"[volume] backend_names needs two backends, not {names}")
        cls.pools = cls._list_pools()
        wanted = [*names[:2], CONF.asyncopy.throttled_backend]
        cls.backend_types = {
            name: cls.create_volume_type(extra_specs={"volume_backend_name": name})
            for name in dict.fromkeys(wanted)
            if name
        }
        cls.untyped = cls.create_volume_type()

    @classmethod
    def _list_pools(cls) -> dict[str, Pool]:
        listed = cls.admin_scheduler_stats_client.list_pools(detail=True)["pools"]
        return {
            pool["capabilities"]["volume_backend_name"]: Pool(
                pool["capabilities"]["volume_backend_name"],
                pool["name"],
                str(pool["capabilities"].get("storage_protocol", "")).lower(),
            )
            for pool in listed
        }

    # Volumes and their data

    def pool(self, backend: str) -> Pool:
        if backend not in self.pools:
            raise self.failureException(f"no pool of backend {backend!r} in {sorted(self.pools)}")
        return self.pools[backend]

    def new_volume(self, backend: str, size_gib: int) -> dict[str, Any]:
        """A volume on ``backend``, deleted (and waited for) at cleanup."""
        volume: dict[str, Any] = self.create_volume(
            size=size_gib, volume_type=self.backend_types[backend]["name"]
        )
        return volume

    def fill(self, volume_id: str, model: pattern.Model) -> Readback:
        """Write the model's extents, then read the whole volume back."""
        with attach.attached(self.admin_volume_client, volume_id) as volume:
            self.assertEqual(model.size, volume.size, f"size of volume {volume_id}")
            for offset, data in pattern.pieces(model.extents):
                volume.write(offset, data)
            volume.flush()
            return read_whole(volume, model)

    def read_back(self, volume_id: str, model: pattern.Model) -> Readback:
        with attach.attached(self.admin_volume_client, volume_id) as volume:
            return read_whole(volume, model)

    def assert_identical(self, readback: Readback, volume_id: str, where: str) -> None:
        if readback.difference is not None:
            self.fail(
                f"volume {volume_id} {where}: first byte differing from what was written "
                f"at offset {readback.difference} (MiB {readback.difference // MiB})"
            )

    def retype_on_its_backend(self, volume: dict[str, Any], new_type: str) -> None:
        """Retype to a type that admits the volume's backend, e.g. one that pins none.

        The scheduler keeps a volume where it is when the new type admits its backend; a
        driver that cannot retype in place (NFS) has Cinder migrate it within its backend.
        """
        client = self.admin_volume_client
        host = host_of(client.show_volume(volume["id"])["volume"])
        client.retype_volume(volume["id"], new_type=new_type, migration_policy="on-demand")
        deadline = time.monotonic() + CONF.volume.build_timeout
        while True:
            shown = client.show_volume(volume["id"])["volume"]
            if shown[MIGSTAT] == "error":
                self.fail(f"retype of volume {volume['id']} to {new_type}: migration error")
            if shown["volume_type"] == new_type and shown["status"] == "available":
                break
            if time.monotonic() > deadline:
                self.fail(f"volume {volume['id']} not retyped to {new_type}: {shown['status']}")
            time.sleep(POLL_INTERVAL)
        self.assertEqual(host, host_of(shown), "the retype moved the volume")
        self.assert_nothing_left(volume)

    # Migrations

    def move(
        self, volume: dict[str, Any], move: Move, watch: ProgressWatch | None = None
    ) -> tuple[dict[str, Any], float]:
        """Request ``move`` and wait for it; the volume shown after it and its seconds."""
        started = time.monotonic()
        if move.kind == "migrate":
            self.admin_volume_client.migrate_volume(
                volume["id"], host=move.destination.name, force_host_copy=True
            )
        else:
            self.admin_volume_client.retype_volume(
                volume["id"], new_type=move.new_type, migration_policy="on-demand"
            )
        shown = self.await_move(volume["id"], move, watch)
        return shown, time.monotonic() - started

    def await_move(self, volume_id: str, move: Move, watch: ProgressWatch | None) -> dict[str, Any]:
        """Poll until the move has arrived; fail at once on ``error``. ``watch()`` each round."""
        deadline = time.monotonic() + CONF.volume.build_timeout
        while True:
            shown: dict[str, Any] = self.admin_volume_client.show_volume(volume_id)["volume"]
            if shown[MIGSTAT] == "error":
                self.fail(f"{move.kind} of volume {volume_id} to {move.destination.name}: error")
            if self._arrived(shown, move):
                return shown
            if time.monotonic() > deadline:
                self.fail(
                    f"{move.kind} of volume {volume_id} to {move.destination.name} not done "
                    f"after {CONF.volume.build_timeout} s: migration status {shown[MIGSTAT]}, "
                    f"status {shown['status']}, host {shown[HOST]}"
                )
            if watch is not None:
                watch()
            time.sleep(POLL_INTERVAL)

    @staticmethod
    def _arrived(shown: dict[str, Any], move: Move) -> bool:
        """Done: ``success`` on the destination host (a stale ``success`` is on the source)."""
        return (
            shown[MIGSTAT] == "success"
            and shown["status"] == "available"
            and host_of(shown) == move.destination.host
            and (move.new_type is None or shown["volume_type"] == move.new_type)
        )

    def move_and_check(
        self,
        volume: dict[str, Any],
        move: Move,
        model: pattern.Model,
        source: Readback,
        watch: ProgressWatch | None = None,
    ) -> Readback:
        """Move the volume, record the figures, then check data, allocation and leftovers."""
        shown, seconds = self.move(volume, move, watch)
        self.assertNotEqual(move.source.host, host_of(shown), "host unchanged")
        there = self.read_back(volume["id"], model)
        progress_seen = None if watch is None else watch.seen
        self.record(move, model, seconds, source, there, progress_seen)
        self.assert_identical(there, volume["id"], f"after {move.kind} to {move.destination.name}")
        if CONF.asyncopy.manager == "asyncopy":
            self.assert_as_thin(there, source, move)
        self.assert_nothing_left(volume)
        return there

    def assert_as_thin(self, there: Readback, source: Readback, move: Move) -> None:
        """The destination allocates no more than its source, plus ``ALLOCATION_SLACK``.

        Both are counted in the coarser of their allocation units: an RBD object counts
        from its start to its last byte written, a file's blocks only where written.
        """
        grain = max(there.grain, source.grain)
        held, had = pattern.grained(there.ranges, grain), pattern.grained(source.ranges, grain)
        self.assertLessEqual(
            held,
            had + ALLOCATION_SLACK,
            f"{move.destination.backend} allocates {held} bytes in units of {grain} "
            f"({there.allocated} as it counts) where its source on {move.source.backend} "
            f"allocated {had} ({source.allocated})",
        )

    def record(
        self,
        move: Move,
        model: pattern.Model,
        seconds: float,
        source: Readback,
        there: Readback,
        progress_seen: bool | None,
    ) -> None:
        measurement = results.Measurement(
            test=self._testMethodName,
            kind=move.kind,
            manager=CONF.asyncopy.manager,
            source_backend=move.source.backend,
            destination_backend=move.destination.backend,
            size=model.size,
            data_bytes=model.data_bytes,
            seconds=round(seconds, 3),
            source_allocated=source.allocated,
            destination_allocated=there.allocated,
            identical=there.difference is None,
            progress_seen=progress_seen,
        )
        results.append(CONF.asyncopy.results_file, measurement)

    # Leftovers

    def assert_nothing_left(self, volume: dict[str, Any]) -> None:
        """Available, no attachment record, and no temporary volume of the migration remains."""
        shown = self.admin_volume_client.show_volume(volume["id"])["volume"]
        self.assertEqual("available", shown["status"])
        self.assertEqual([], shown["attachments"])
        self.assertEqual([], self.attachment_records(volume["id"]))
        deadline = time.monotonic() + CONF.volume.build_timeout
        while left := self.leftovers(volume):
            if time.monotonic() > deadline:
                self.fail(f"temporary volumes of the migration of {volume['id']} left: {left}")
            time.sleep(POLL_INTERVAL)

    def attachment_records(self, volume_id: str) -> list[dict[str, Any]]:
        """The volume's attachments in any attach status (the API's volume shows only
        ``attached`` ones, and not its ``attach_status``)."""
        client = self.admin_volume_client
        resp, body = client.get(
            f"attachments/detail?all_tenants=1&volume_id={volume_id}",
            headers={client.api_microversion_header_name: ATTACHMENTS_MICROVERSION},
            extra_headers=True,
        )
        client.expected_success(200, resp.status)
        records: list[dict[str, Any]] = json.loads(body)["attachments"]
        return records

    def leftovers(self, volume: dict[str, Any]) -> list[str]:
        """Other volumes named as ``volume`` or as a migration's source for it."""
        listed = self.admin_volume_client.list_volumes(detail=True, params={"all_tenants": True})
        return [
            f"{other['id']} ({other['name']}, {other['status']})"
            for other in listed["volumes"]
            if other["id"] != volume["id"] and _temporary_for(other, volume)
        ]


def _temporary_for(other: dict[str, Any], volume: dict[str, Any]) -> bool:
    name = other.get("name") or ""
    temporary = name.startswith(TEMPORARY_PREFIX) and volume["id"] in name
    return name == volume["name"] or temporary
