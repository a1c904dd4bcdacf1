"""A volume migrated between two backends, both ways, reads back block for block as written."""

from __future__ import annotations

from typing import Any

from tempest import config

from asyncopy_tempest import pattern
from asyncopy_tempest.tests.base import (
    GiB,
    MiB,
    MigrationTestBase,
    Move,
    Pool,
    ProgressWatch,
    Readback,
    idempotent_id,
)

CONF = config.CONF
SEED = 20261208
DATA_BYTES = 24 * MiB + 12345  # in the 1 GiB volumes: scattered, odd-sized


class MigrationIdentityTest(MigrationTestBase):
    """Generic migrations (``os-migrate_volume``, retype on demand) between two backends.

    Backend A and B are ``[volume] backend_names`` [0] and [1]; the data must come back
    identical with any manager, the destination as thin as the source with asyncopy's.
    """

    def _a_and_b(self) -> tuple[Pool, Pool]:
        first, second = list(dict.fromkeys(CONF.volume.backend_names))[:2]
        return self.pool(first), self.pool(second)

    def _filled(
        self, backend: str, size_gib: int, model: pattern.Model
    ) -> tuple[dict[str, Any], Readback]:
        volume = self.new_volume(backend, size_gib)
        source = self.fill(volume["id"], model)
        self.assert_identical(source, volume["id"], f"as written on {backend}")
        return volume, source

    @idempotent_id("7c1d1158-16ee-4778-b6ca-5264e3a5f297")
    def test_migrate_both_ways(self) -> None:
        """os-migrate_volume A -> B -> A of an untyped 1 GiB volume holding scattered data."""
        a, b = self._a_and_b()
        model = pattern.build_model(GiB, DATA_BYTES, SEED)
        volume = self.new_volume(a.backend, 1)
        # A type that pins a backend also filters the migration's destination.
        self.retype_on_its_backend(volume, self.untyped["name"])
        source = self.fill(volume["id"], model)
        self.assert_identical(source, volume["id"], f"as written on {a.backend}")
        there = self.move_and_check(volume, Move("migrate", a, b), model, source)
        self.move_and_check(volume, Move("migrate", b, a), model, there)

    @idempotent_id("702bc0c6-b6e2-48da-90a2-a68332c357b3")
    def test_retype_both_ways(self) -> None:
        """Retype on demand from A's type to B's and back, of a 1 GiB volume."""
        a, b = self._a_and_b()
        model = pattern.build_model(GiB, DATA_BYTES, SEED + 1)
        volume, source = self._filled(a.backend, 1, model)
        to_b = Move("retype", a, b, self.backend_types[b.backend]["name"])
        there = self.move_and_check(volume, to_b, model, source)
        to_a = Move("retype", b, a, self.backend_types[a.backend]["name"])
        self.move_and_check(volume, to_a, model, there)

    @idempotent_id("7caa0b47-0a92-4d3f-b23d-513fef3aa2cc")
    def test_progress_shown(self) -> None:
        """A throttled retype to the NFS backend shows its progress to an operator."""
        throttled = CONF.asyncopy.throttled_backend
        if not throttled:
            self.skipTest("[asyncopy] throttled_backend is not set")
        source_pool, nfs = self.pool(throttled), self._nfs_pool()
        model = pattern.build_model(2 * GiB, CONF.asyncopy.progress_data * MiB, SEED + 2)
        volume, source = self._filled(throttled, 2, model)
        watch = ProgressWatch(volume["id"])
        move = Move("retype", source_pool, nfs, self.backend_types[nfs.backend]["name"])
        self.move_and_check(volume, move, model, source, watch)
        after = watch.progress()
        if CONF.asyncopy.manager == "asyncopy":
            self.assertTrue(watch.seen, f"no migration_progress in {watch.looks} looks")
            self.assertIsNone(after, "migration_progress still shown after success")

    def _nfs_pool(self) -> Pool:
        for name in dict.fromkeys(CONF.volume.backend_names):
            if self.pool(name).protocol == "nfs":
                return self.pool(name)
        raise self.failureException(f"no NFS backend among {CONF.volume.backend_names}")
