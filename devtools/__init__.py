"""What develops and tests asyncopy, not part of the installed package: the private dev stack
(``devstack``: a single-node Ceph and tgtd on loopback), loop devices (``loopdev``) and the
sequential reference copier the tests hold the engine to (``reference``)."""
