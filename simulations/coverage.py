"""Coverage ("sometimes" assertions, as in Antithesis): which hard paths a run reached.

A safety checker that never sees a conflict proves nothing about conflicts. Each
run counts how often it reached the interesting paths below; a sweep sums them,
and the CI sweep fails when a seed batch never reaches one of `REQUIRED`.
"""

from __future__ import annotations

from collections import Counter

#: Every coverage point, with what it means.
POINTS: dict[str, str] = {
    "conflict_created": "a file became a conflict or gained a side",
    "conflict_resolved": "a write by an author who had seen a conflict resolved it",
    "three_sided": "a conflict with three or more sides existed",
    "writeback_kept": "writing a conflict block back (markers intact) kept the conflict",
    "race_outside_window": "a write after an unseen write outside the window replaced it",
    "add_wins": "an rm kept a racing write, or a write recreated its removed parent",
    "aside": "a node was placed aside at <name>.conflict-<n>",
    "dedupe_sequencer": "a retried append was deduplicated by msg id",
    "dedupe_fold": "an op logged twice (retry after the dedupe window) was folded once",
    "duplicate_delivery": "a mount dropped a delivery it had already folded",
    "out_of_order": "a mount buffered a delivery that arrived before its predecessor",
    "crash_restart": "a mount crashed and restarted from its snapshot and the log's tail",
    "restart_from_snapshot": "a restart began from a snapshot rather than from scratch",
    "partition_release": "a partitioned mount's buffered appends were released",
    "clock_jump": "the sequencer's clock jumped",
    "append_retry": "an append failed and was retried with the same op id",
    "rejected_op": "an op was invalid against the issuing mount's tree (not logged)",
    "blob_content": "an entry carried content as a blob (large bytes, or spilled ones)",
    "blob_conflict": "a conflict had a side stored as a blob",
    "spill": "the server refused an entry as too large; its inline bytes were spilled"
    " to blobs and it was appended again under its op id",
    "change_forked": "a mount sealed its change as the base of a new child and moved to it",
    "change_switched": "a mount moved to another existing change (its op counter carried)",
    "delivery_lost": "a delivery was lost on the way to a mount",
    "resubscribed": "a mount re-subscribed from its last folded sequence and got a lost"
    " entry again",
    "redelivered": "the server re-delivered an entry the mount had folded (dropped)",
    "deep_tree": "a node 10 or more levels deep was created",
    "wide_dir": "a directory held 32 or more entries",
    "metadata_set": "a metadata set or clear was folded",
    "metadata_conflict": "racing sets left a metadata key conflicted (or gained it a side)",
    "metadata_resolved": "a set by an author who had seen a conflicted key resolved it",
}

#: The points a CI seed batch must reach (a batch that misses one fails).
REQUIRED = (
    "conflict_created",
    "conflict_resolved",
    "three_sided",
    "add_wins",
    "aside",
    "dedupe_fold",
    "dedupe_sequencer",
    "out_of_order",
    "crash_restart",
    "partition_release",
    "blob_content",
    "spill",
    "change_forked",
    "change_switched",
    "delivery_lost",
    "resubscribed",
    "redelivered",
    "deep_tree",
    "wide_dir",
)


def new() -> Counter[str]:
    """Return an empty coverage counter with every point present (at 0)."""
    return Counter(dict.fromkeys(POINTS, 0))


def missing(counts: Counter[str]) -> list[str]:
    """Return the required points ``counts`` never reached."""
    return [name for name in REQUIRED if counts[name] == 0]


def render(counts: Counter[str]) -> str:
    """Render the counts one point per line, in `POINTS` order."""
    width = max(len(name) for name in POINTS)
    return "\n".join(f"  {name:<{width}}  {counts[name]:>7}" for name in POINTS)
