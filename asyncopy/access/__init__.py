"""How each kind of volume is reached, shared by its source and its sink: file descriptors
(``posix``), Ceph (``ceph``: specs and settings; ``librbd``: the binding), iSCSI in user space
(``iscsi``), and os-brick attachments (``brick``)."""
