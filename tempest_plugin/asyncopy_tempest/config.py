"""The ``[asyncopy]`` group of tempest.conf: what the deployment under test runs."""

from oslo_config import cfg

GROUP = cfg.OptGroup(
    name="asyncopy",
    title="asyncopy migration tests",
    help="How the asyncopy tempest plugin measures and judges Cinder's volume migrations.",
)

OPTS = [
    cfg.StrOpt(
        "manager",
        default="asyncopy",
        choices=[
            ("asyncopy", "cinder-volume runs asyncopy.cinder.manager.VolumeManager"),
            ("stock", "cinder-volume runs Cinder's own VolumeManager"),
        ],
        help="The volume manager the deployment's cinder-volume services run. With "
        "'stock', a thick destination and a migration without progress are recorded in "
        "the results, not failed; the data must be identical with either.",
    ),
    cfg.StrOpt(
        "results_file",
        default="",
        help="A file to which one JSON line is appended per migration measured (backends, "
        "size, seconds, allocations, identical, progress seen). Empty: none is written.",
    ),
    cfg.StrOpt(
        "throttled_backend",
        default="",
        help="The volume_backend_name of a backend whose volume_copy_bps_limit makes a copy "
        "from it slow enough to watch (e.g. ceph-slow). Empty: the progress test is skipped.",
    ),
    cfg.IntOpt(
        "progress_data",
        default=256,
        min=1,
        help="MiB of data written to the 2 GiB volume the progress test migrates.",
    ),
]


def list_opts() -> list[tuple[cfg.OptGroup, list[cfg.Opt]]]:
    """The group and its options, for oslo-config-generator."""
    return [(GROUP, OPTS)]
