"""Tempest tests that prove a Cinder migration leaves a volume block-for-block identical.

Cinder's own tests of migration (tempest's ``VolumeRetypeWithMigrationTest``) check that a
volume changed host and type; none reads its data. These tests write scattered seeded data
into a volume through a local attach (os-brick on this host, as ``cinder local-attach``
does: librbd for RBD, the volume's file for NFS), move it between the two backends of
``[volume] backend_names`` and back, with ``os-migrate_volume`` and with a retype on
demand, and after each move read the whole volume back and compare it, holes included,
with what was written: the first byte that differs fails the test by its offset. Each move
must also leave the volume available and detached with no temporary volume behind, and,
with asyncopy's manager, the destination no fuller than its source (plus 1 MiB). A third
test migrates a volume off a throttled backend and watches ``openstack volume show`` for
the ``migration_progress`` property while it copies. Every move's figures (seconds,
allocations, identical, progress seen) go to ``[asyncopy] results_file`` as JSON lines.

Run, as root on a host that reaches the deployment's Ceph monitors and NFS mounts, with
``[volume-feature-enabled] multi_backend = true`` and the ``[asyncopy]`` group set::

    pip install -e tempest_plugin
    tempest run --config-file tempest.conf --regex asyncopy_tempest
"""
