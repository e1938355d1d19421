"""The kernel-facing parameters of a mesafs FUSE mount, importable without pyfuse3.

`mesa.fuse._ops` serves the mount with them; the FUSE floor of the benchmark
(simulations/bench/fuse_floor.py) reads them from here so the floor runs with the same
caching and block size as the mount by construction.
"""

from __future__ import annotations

#: ``st_blksize`` the mount reports (and the size of a read the kernel asks for).
BLKSIZE = 128 * 1024
#: How long the kernel may cache entries and attributes; the log invalidates them sooner.
DEFAULT_CACHE_TIMEOUT_S = 3600.0
