"""engine.diff: structured tree differences and the unified patch."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from engine import conflicts
from engine.content import Content
from engine.diff import (
    PatchFile,
    conflicted_paths,
    diff_trees,
    line_counts,
    render_patch,
)
from engine.fold import ChangeState
from engine.ops import Chmod, Mkdir, Rm, Symlink, Utimes, Write
from engine.tree import FileNode
from engine.treemerge import merge_trees
from tests.engine.test_treemerge import Builder, build_base, fork, write


def test_added_modified_deleted_and_unchanged() -> None:
    base = build_base({("a",): b"1\n", ("b",): b"2\n", ("d", "c"): b"3\n"})
    new = (
        fork(base, "x")
        .apply(
            write(("a",), b"1 changed\n"),
            Rm(("b",)),
            write(("n",), b"new\n"),
            Mkdir(("empty",)),
            Utimes(("d", "c"), 5, 5),  # times alone are not a difference
        )
        .state
    )
    entries = diff_trees(base.tree, new.tree)
    assert [(e.path, e.status) for e in entries] == [
        (("a",), "modified"),
        (("b",), "deleted"),
        (("n",), "added"),
    ]
    assert diff_trees(base.tree, base.tree) == []


def test_mode_kind_and_symlink_target_changes_are_modifications() -> None:
    base = build_base({("f",): b"x\n"})
    base_with_link = fork(base, "x").apply(Symlink(("l",), "f")).state
    new = (
        fork(base_with_link, "y")
        .apply(Chmod(("f",), 0o755), Rm(("l",)), Symlink(("l",), "elsewhere"))
        .state
    )
    entries = {e.path: e for e in diff_trees(base_with_link.tree, new.tree)}
    assert entries[("f",)].status == "modified"
    assert entries[("f",)].new is not None
    assert entries[("f",)].new.git_mode == 0o100755
    assert entries[("l",)].status == "modified"
    assert entries[("l",)].new is not None
    assert entries[("l",)].new.target == "elsewhere"


def test_patch_is_git_style() -> None:
    base = build_base({("a",): b"1\n2\n3\n", ("gone",): b"bye\n"})
    new = fork(base, "x").apply(write(("a",), b"1\ntwo\n3"), Rm(("gone",)), write(("n",), b"hi\n"))
    entries = diff_trees(base.tree, new.state.tree)
    data = {
        ("a",): (b"1\n2\n3\n", b"1\ntwo\n3"),
        ("gone",): (b"bye\n", b""),
        ("n",): (b"", b"hi\n"),
    }
    patch = render_patch([PatchFile(e, *data[e.path]) for e in entries])
    assert patch == (
        b"diff --git a/a b/a\n"
        b"--- a/a\n+++ b/a\n@@ -1,3 +1,3 @@\n 1\n-2\n-3\n+two\n+3\n"
        b"\\ No newline at end of file\n"
        b"diff --git a/gone b/gone\ndeleted file mode 100644\n"
        b"--- a/gone\n+++ /dev/null\n@@ -1 +0,0 @@\n-bye\n"
        b"diff --git a/n b/n\nnew file mode 100644\n"
        b"--- /dev/null\n+++ b/n\n@@ -0,0 +1 @@\n+hi\n"
    )


def test_binary_files_have_no_hunks() -> None:
    base = build_base({})
    new = fork(base, "x").apply(write(("bin",), b"\0\1\2")).state
    (entry,) = diff_trees(base.tree, new.tree)
    patch = render_patch([PatchFile(entry, b"", b"\0\1\2")])
    assert patch.endswith(b"Binary files /dev/null and b/bin differ\n")
    assert line_counts(b"", b"\0\1\2") == (0, 0)


def test_a_conflicted_file_shows_its_markers_inline() -> None:
    base = build_base({("f",): b"base\n"})
    left = fork(base, "l").apply(write(("f",), b"left\n")).state
    right = fork(base, "r").apply(write(("f",), b"right\n")).state
    merged = merge_trees(base.tree, left.tree, right.tree).tree
    (entry,) = diff_trees(left.tree, merged)
    assert entry.is_conflicted
    assert conflicted_paths(merged) == [("f",)]
    block = conflicts.materialize([b"left\n", b"right\n"], [b"base\n"])
    patch = render_patch([PatchFile(entry, b"left\n", block)])
    assert b"+<<<<<<< conflict 1 of 1\n" in patch
    assert b"++++++++ side #2\n" in patch
    assert b"+>>>>>>> conflict 1 of 1 ends\n" in patch


lines = st.lists(st.sampled_from([b"a\n", b"b\n", b"c\n", b"d"]), max_size=8).map(b"".join)


@given(lines, lines)
def test_line_counts_match_the_patch(old: bytes, new: bytes) -> None:
    added, deleted = line_counts(old, new)
    state = ChangeState()
    Builder(state, "x", 1).apply(Write(("f",), Content.of(old)))
    after = ChangeState(tree=state.tree.clone(), seq=state.seq)
    Builder(after, "y", 2).apply(Write(("f",), Content.of(new)))
    entries = diff_trees(state.tree, after.tree)
    if old == new:
        assert entries == []
        return
    patch = render_patch([PatchFile(entries[0], old, new)])
    body = [ln for ln in patch.split(b"\n") if not ln.startswith((b"+++", b"---"))]
    assert sum(1 for ln in body if ln.startswith(b"+")) == added
    assert sum(1 for ln in body if ln.startswith(b"-")) == deleted
    node = after.tree.lookup(("f",))
    assert isinstance(node, FileNode)
