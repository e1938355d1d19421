"""The FUSE adapter: a mount's repos as a real POSIX directory (``mesa mount``).

``MOUNTPOINT/<org>/<repo>/...`` is served by a `MesaFileSystem` mount in the same
process and event loop (pyfuse3 in asyncio mode shares the loop with nats-py).

Importing this package does not import pyfuse3: only ``mesa.fuse._ops`` and the
mount command need it (``pip install 'mesafs[fuse]'``), so the rest of the SDK and
``mesa unmount`` work without libfuse.

Modules:
    _inodes: the kernel-visible inode table ((repo, tree ino) -> FUSE ino, lookup
        counts, the dentries the kernel holds, forget).
    _handles: open files (bytes buffered per inode, one Write on flush/fsync/close).
    _invalidate: turns folded log entries into kernel cache invalidations, sent from
        a thread of their own (never inside a request handler).
    _ops: the pyfuse3 ``Operations``.
    _cli: ``mesa mount`` / ``mesa unmount`` (foreground, ``--daemonize``).
    _writer: write-behind publication, one ordered queue per repo.

The FUSE benchmark (beside tmpfs and a FUSE floor) is ``python -m simulations bench
fuse`` (simulations/bench/fuse.py).
"""

from __future__ import annotations
