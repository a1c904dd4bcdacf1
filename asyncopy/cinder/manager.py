"""A cinder-volume manager whose volume copies go through asyncopy, switched on with one line:

    [DEFAULT]
    volume_manager = asyncopy.cinder.manager.VolumeManager

It is Cinder's own ``VolumeManager`` with one method replaced, ``_copy_volume_data``: what a
generic migration (``migrate_volume`` to another backend, retype with migration) and a
generic revert-to-snapshot copy through. Cinder still attaches and detaches both volumes
(``_attach_volume``/``_detach_volume``: privsep, multipath, NFS mounts stay Cinder's), then
asyncopy copies between what they return, a device or file path or an os-brick
``RBDVolumeIOWrapper`` (reached through librbd, concurrently and sparsely):

- ``sparse`` is the destination backend's ``sparse_copy_volume`` capability, asked for as
  Cinder asks it: the destination reads zeros, so zero blocks are skipped. An RBD volume
  Cinder just created is known to read zeros by its fast-diff map anyway.
- The backend's ``volume_copy_bps_limit`` is a rate limit on every path (Cinder's cgroup
  throttle covers only ``dd`` between block devices), split among the copies this manager
  runs at once, as Cinder splits it. ``[asyncopy] ionice`` sets the copies' I/O priority.
- The copy is verified (re-read and compared) unless ``[asyncopy] verify = false``.
- While it copies, the volume the operator sees (the one migrated or reverted, not the
  temporary one) carries ``migration_progress`` in its metadata (percent, bytes, rate, time
  left), written at most every ``PROGRESS_INTERVAL`` seconds and removed when the copy ends,
  however it ends. The volume's metadata, not its admin metadata: the API shows an admin
  metadata key only if it is ``readonly`` or ``attached_mode``, so ``openstack volume show``
  would never show it.
- Where asyncopy cannot copy as well or as safely, Cinder's own copy runs, and the log says
  why: an encryption change (the data must pass through dm-crypt on both ends) or a handle
  asyncopy cannot open.
- Both volumes are always detached, also when the copy fails or the service stops (the
  copy's child process is then killed and waited for); a failure raises, and Cinder's own
  handling (migration_status ``error``, the new volume deleted) takes over as with its copier.

``init_host`` refuses to start on a Cinder whose ``_copy_volume_data``, ``_attach_volume``
or ``_detach_volume`` take other arguments than the ones this was written for (Cinder 29).
"""

from __future__ import annotations

import inspect
import time
from typing import Any

from cinder.volume import manager as cinder_manager
from cinder.volume import rpcapi as volume_rpcapi
from cinder.volume import volume_types, volume_utils
from oslo_config import cfg
from oslo_log import log as logging

from asyncopy.cinder import can_describe, copy_handles, rate_share
from asyncopy.core.progress import Progress
from asyncopy.errors import IncompatibleCinder

LOG = logging.getLogger(__name__)
CONF = cfg.CONF
GiB = 1 << 30
MiB = 1 << 20
PROGRESS_KEY = "migration_progress"
PROGRESS_INTERVAL = 20.0  # seconds: three updates a minute at most
MIGRATION_DEFAULTS = {"verify": True}  # [asyncopy] defaults for the copies Cinder runs

# The parameters of the methods this manager overrides or calls, in Cinder 29.
KNOWN_SIGNATURES = {
    "_copy_volume_data": ("self", "ctxt", "src_vol", "dest_vol", "remote"),
    "_attach_volume": ("self", "ctxt", "volume", "properties", "remote", "attach_encryptor"),
    "_detach_volume": (
        "self",
        "ctxt",
        "attach_info",
        "volume",
        "properties",
        "force",
        "remote",
        "attach_encryptor",
    ),
}


def check_cinder(manager_class: type = cinder_manager.VolumeManager) -> None:
    """Refuse a Cinder whose volume manager this subclass does not know.

    Raises:
        IncompatibleCinder: a method is missing or takes other parameters.
    """
    for name, expected in KNOWN_SIGNATURES.items():
        method = getattr(manager_class, name, None)
        found = tuple(inspect.signature(method).parameters) if callable(method) else None
        if found != expected:
            raise IncompatibleCinder(
                f"asyncopy.cinder.manager.VolumeManager does not know this Cinder: "
                f"VolumeManager.{name} takes {found}, not {expected}; set [DEFAULT] "
                f"volume_manager back to cinder.volume.manager.VolumeManager"
            )


class VolumeManager(cinder_manager.VolumeManager):  # type: ignore[misc]
    """Cinder's volume manager, copying volumes through asyncopy."""

    def init_host(self, added_to_cluster: Any = None, **kwargs: Any) -> None:
        check_cinder()
        super().init_host(added_to_cluster=added_to_cluster, **kwargs)

    def _copy_volume_data(self, ctxt: Any, src_vol: Any, dest_vol: Any, remote: Any = None) -> None:
        """Copy src_vol's data onto dest_vol, both attached here by Cinder."""
        if volume_types.volume_types_encryption_changed(
            ctxt, src_vol.volume_type_id, dest_vol.volume_type_id
        ):
            LOG.info(
                "Volume %s -> %s changes encryption: copying through dm-crypt with Cinder's "
                "own copy, not asyncopy.",
                src_vol.id,
                dest_vol.id,
            )
            super()._copy_volume_data(ctxt, src_vol, dest_vol, remote)
            return
        properties = volume_utils.brick_get_connector_properties(
            self.configuration.use_multipath_for_image_xfer,
            self.configuration.enforce_multipath_for_image_xfer,
        )
        dest_remote, src_remote = remote in ("dest", "both"), remote in ("src", "both")
        dest_info = self._attach_volume(ctxt, dest_vol, properties, remote=dest_remote)
        try:
            try:
                src_info = self._attach_volume(ctxt, src_vol, properties, remote=src_remote)
            except Exception:
                LOG.error("Failed to attach source volume %s for copy.", src_vol.id)
                raise
            try:
                self._copy_attached(ctxt, src_vol, dest_vol, src_info, dest_info)
            finally:
                self._detach_volume(
                    ctxt, src_info, src_vol, properties, force=True, remote=src_remote
                )
        finally:
            self._detach_volume(
                ctxt, dest_info, dest_vol, properties, force=True, remote=dest_remote
            )

    def _copy_attached(
        self, ctxt: Any, src_vol: Any, dest_vol: Any, src_info: Any, dest_info: Any
    ) -> None:
        src, dest = src_info["device"]["path"], dest_info["device"]["path"]
        size = int(src_vol["size"]) * GiB
        sparse = self._destination_is_sparse(ctxt, dest_vol)
        if not (can_describe(src) and can_describe(dest)):
            LOG.info(
                "asyncopy cannot open %s -> %s (%s -> %s): Cinder's own copy runs.",
                src_vol.id,
                dest_vol.id,
                type(src).__name__,
                type(dest).__name__,
            )
            volume_utils.copy_volume(
                src, dest, size // MiB, self.configuration.volume_dd_blocksize, sparse=sparse
            )
            return
        limit = int(self.configuration.safe_get("volume_copy_bps_limit") or 0)
        limit = limit or int(CONF.volume_copy_bps_limit or 0)
        note = ProgressNote(self.db, ctxt.elevated(), _shown_volume(src_vol, dest_vol).id)
        try:
            result = copy_handles(
                src,
                dest,
                size,
                sparse=sparse,
                conf=CONF,
                progress=note,
                rate=rate_share(self, limit),
                defaults=MIGRATION_DEFAULTS,
            )
        except Exception:
            LOG.error("asyncopy failed to copy volume %s to %s.", src_vol.id, dest_vol.id)
            raise
        finally:
            note.remove()
        LOG.info(
            "asyncopy copied volume %(src)s to %(dest)s: %(total)d bytes in %(seconds).2f s "
            "(%(read)d read, %(written)d written, %(zeroed)d zeroed, %(skipped)d skipped), "
            "verified %(verified)s, rate limit %(limit)s B/s.",
            {
                "src": src_vol.id,
                "dest": dest_vol.id,
                "total": result["bytes_total"],
                "seconds": result["seconds"],
                "read": result["bytes_read"],
                "written": result["bytes_written"],
                "zeroed": result["bytes_zeroed"],
                "skipped": result["bytes_skipped"],
                "verified": result["verified"],
                "limit": limit or "no",
            },
        )

    def _destination_is_sparse(self, ctxt: Any, dest_vol: Any) -> bool:
        """The destination backend's ``sparse_copy_volume``, asked for as Cinder asks it."""
        capabilities = volume_rpcapi.VolumeAPI().get_capabilities(
            ctxt, dest_vol.service_topic_queue, False
        )
        return bool(capabilities and capabilities.get("sparse_copy_volume", False))


def _shown_volume(src_vol: Any, dest_vol: Any) -> Any:
    """The volume an operator looks at: a migration's source, a revert's destination."""
    temporary = (
        str(dest_vol.migration_status or "").startswith("target:")
        or (dest_vol.admin_metadata or {}).get("temporary") == "True"
    )
    return src_vol if temporary else dest_vol


class ProgressNote:
    """Writes a copy's progress into a volume's metadata, at most every
    ``PROGRESS_INTERVAL`` seconds (the first report at once); never fails the copy."""

    def __init__(self, db: Any, ctxt: Any, volume_id: str) -> None:
        self.db = db
        self.ctxt = ctxt
        self.volume_id = volume_id
        self.last: float | None = None

    def __call__(self, progress: Progress) -> None:
        now = time.monotonic()
        if self.last is not None and now - self.last < PROGRESS_INTERVAL:
            return
        self.last = now
        done, total = progress.done, progress.total
        percent = done * 100 // total if total else 100
        left = "" if progress.eta is None else f", {progress.eta:.0f} s left"
        text = f"{percent}% ({done} of {total} bytes, {progress.rate / MiB:.1f} MiB/s{left})"
        try:
            self.db.volume_metadata_update(self.ctxt, self.volume_id, {PROGRESS_KEY: text}, False)
        except Exception as exc:
            LOG.warning("Cannot record the copy's progress on volume %s: %s", self.volume_id, exc)

    def remove(self) -> None:
        if self.last is None:
            return
        try:
            self.db.volume_metadata_delete(self.ctxt, self.volume_id, PROGRESS_KEY)
        except Exception as exc:
            LOG.warning("Cannot remove %s from volume %s: %s", PROGRESS_KEY, self.volume_id, exc)
