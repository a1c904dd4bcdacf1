"""The blueprint's migration, run the way cinder-volume runs: in its own process, patched by
eventlet (``cinder.tests.unit`` monkey-patches on import), with Cinder's real RBD driver.

``python -m tests.cinder_flow CEPH_CONF LOOP_DEVICE``: creates a 1 GiB RBD volume with the
driver and writes data into it, migrates it to the loop device (os-brick's LOCAL connector) and
back to a second volume the driver creates, all through ``copy_volume_data``; then copies it
with the ``copy_volume`` drop-in and with Cinder's own ``copy_volume`` between os-brick
``RBDVolumeIOWrapper`` objects. Prints one JSON object for the test to check.
"""

from __future__ import annotations

import json
import random
import sys
import time
import uuid
import warnings
from typing import Any

warnings.simplefilter("ignore")

from cinder import context, objects  # noqa: E402
from cinder.tests.unit import fake_volume  # noqa: E402  (monkey-patches, as cinder-volume)
from cinder.volume import configuration, volume_utils  # noqa: E402
from cinder.volume.drivers import rbd as rbd_driver  # noqa: E402
from os_brick.initiator import linuxrbd  # noqa: E402
from oslo_config import cfg  # noqa: E402

from asyncopy import cinder as asyncopy_cinder  # noqa: E402

GROUP = "ceph-backend"
MiB = 1 << 20
DATA = [(0, MiB), (100 * MiB + 4096, 3 * MiB), (700 * MiB, 4 * MiB), ((1 << 30) - 4096, 4096)]


def driver(ceph_conf: str) -> Any:
    conf = cfg.CONF
    conf([], project="cinder", default_config_files=[])
    conf.register_opts(rbd_driver.RBD_OPTS, group=GROUP)
    for name, value in (("rbd_ceph_conf", ceph_conf), ("rbd_pool", "rbd"), ("rbd_user", "admin")):
        conf.set_override(name, value, group=GROUP)
    drv = rbd_driver.RBDDriver(
        configuration=configuration.Configuration(rbd_driver.RBD_OPTS, config_group=GROUP)
    )
    drv.do_setup(context.get_admin_context())
    drv.check_for_setup_error()
    return drv


def new_volume(drv: Any) -> Any:
    volume = fake_volume.fake_volume_obj(context.get_admin_context(), size=1, id=str(uuid.uuid4()))
    drv.create_volume(volume)
    return volume


def wrapper(ceph_conf: str, name: str) -> Any:
    client = linuxrbd.RBDClient("admin", "rbd", conffile=ceph_conf)
    image = linuxrbd.RBDVolume(client, name)
    return (
        linuxrbd.RBDVolumeIOWrapper(
            linuxrbd.RBDImageMetadata(image.image, "rbd", "admin", ceph_conf)
        ),
        image,
        client,
    )


def main() -> int:
    ceph_conf, device = sys.argv[1], sys.argv[2]
    objects.register_all()
    drv = driver(ceph_conf)
    size = 1 << 30
    source = new_volume(drv)
    _, image, client = wrapper(ceph_conf, source.name)
    rng = random.Random(5)
    for offset, length in DATA:
        image.image.write(rng.randbytes(length), offset)
    image.close()
    client.disconnect()
    local = {"driver_volume_type": "local", "data": {"device_path": device}}
    back = new_volume(drv)
    there = asyncopy_cinder.copy_volume_data(drv.initialize_connection(source, {}), local, size)
    again = asyncopy_cinder.copy_volume_data(local, drv.initialize_connection(back, {}), size)
    timings = {}
    names = {}
    for tool, copier in (
        ("asyncopy", asyncopy_cinder.copy_volume),
        ("cinder", volume_utils.copy_volume),
    ):
        target = new_volume(drv)
        src, src_image, src_client = wrapper(ceph_conf, source.name)
        dst, dst_image, dst_client = wrapper(ceph_conf, target.name)
        started = time.monotonic()
        copier(src, dst, size // MiB, "4M")
        timings[tool] = time.monotonic() - started
        names[tool] = target.name
        for handle, owner in ((src_image, src_client), (dst_image, dst_client)):
            handle.close()
            owner.disconnect()
    print(
        json.dumps(
            {
                "source": source.name,
                "back": back.name,
                "there": there,
                "again": again,
                "copy_volume": names,
                "seconds": timings,
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
