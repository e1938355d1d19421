"""The pure core: ids, paths, ops, codec, tree, fold, conflicts, replica. No I/O."""
