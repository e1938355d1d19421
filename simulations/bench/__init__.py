"""Benchmarks and load runs against a real server (not the deterministic simulator).

Each starts a private embedded nats-server (`mesa.server`) and reaches mesafs only
through its public API (`mesa`), the embedded server, the FUSE tuning constants
(`mesa.fuse.tuning`) and the documented seam for instruments (`mesa.instruments`).

Modules:
    realtime: ``python -m simulations bench realtime``. Write-to-visible latency
        between two processes, acknowledged small-file writes per second from one
        mount, and cold-mount time with and without a snapshot at two history
        lengths; each beside its bare nats-py JetStream baseline.
    fuse: ``python -m simulations bench fuse``. A ``mesa mount`` FUSE mount beside
        tmpfs and the FUSE floor, in one run: lookup round trips, cached ``lstat``,
        cached/uncached/cold reads of a large file, ``tar -x`` (and until durable)
        and ``git status`` on a large tree, with the cost factors between them.
    fuse_floor: the FUSE floor itself: a plain in-memory filesystem on the same
        pyfuse3 stack and options as the mount (what FUSE from Python costs on this
        machine), and a C libfuse null filesystem (what one round trip costs).
    live: ``python -m simulations live``. Many SDK mounts in several processes issue
        random colliding ops on one change for a while: acknowledged ops/s, rejected
        ops, write-to-visible latency under load, and whether every mount converged
        to the same tree.
"""
