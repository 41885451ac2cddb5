"""The WordNet hierarchy over ImageNet classes, and superclass groupings such as ``mixed_10``.

Reads the two ImageNet hierarchy files, ``wordnet.is_a.txt`` ("parent child" wnid pairs) and
``words.txt`` ("wnid<TAB>names"), and groups ImageNet classes under WordNet superclasses the
way the ``robustness`` library's ``ImageNetHierarchy.get_subclasses`` does.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from .._validation import DataError

__all__ = ["GROUPS", "Hierarchy", "read_hierarchy", "superclass_members"]

# Superclass groups: (wnid, short name) in label order (robustness common_superclass_wnid).
GROUPS: dict[str, tuple[tuple[str, str], ...]] = {
    "mixed_10": (
        ("n02084071", "dog"), ("n01503061", "bird"), ("n02159955", "insect"),
        ("n02484322", "monkey"), ("n02958343", "car"), ("n02120997", "feline"),
        ("n04490091", "truck"), ("n13134947", "fruit"), ("n12992868", "fungus"),
        ("n02858304", "boat"),
    ),
}


@dataclass(frozen=True)
class Hierarchy:
    """``parent[wnid]``: the one parent each synset keeps; ``names[wnid]``: its words."""

    parent: dict[str, str]
    names: dict[str, str]


def _lines(path: Path) -> list[str]:
    try:
        return path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise DataError(f"Cannot read data file {path}: {err}.") from None


def read_hierarchy(is_a: Path, words: Path) -> Hierarchy:
    """Parse ``wordnet.is_a.txt`` and ``words.txt``.

    WordNet is a DAG; like the robustness library, each synset keeps the *last* parent that
    ``wordnet.is_a.txt`` lists for it, which makes the hierarchy a tree. This is what defines
    ImageNet-10's class membership, so it is kept as is.

    Raises:
        DataError: A line that is not "parent child" / "wnid<TAB>names".
    """
    parent: dict[str, str] = {}
    for number, line in enumerate(_lines(is_a), 1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != 2:
            raise DataError(
                f"Corrupt data file {is_a}: line {number} is {line!r}, expected 'parent child' "
                "(two wnids separated by a space)."
            )
        parent[parts[1]] = parts[0]
    names: dict[str, str] = {}
    for number, line in enumerate(_lines(words), 1):
        if not line.strip():
            continue
        wnid, sep, text = line.partition("\t")
        if not sep:
            raise DataError(
                f"Corrupt data file {words}: line {number} is {line!r}, expected "
                "'wnid<TAB>names'."
            )
        names[wnid.strip()] = text.strip()
    return Hierarchy(parent, names)


def _ancestors(hierarchy: Hierarchy, wnid: str) -> list[str]:
    chain, seen = [], {wnid}
    node = hierarchy.parent.get(wnid)
    while node is not None and node not in seen:
        chain.append(node)
        seen.add(node)
        node = hierarchy.parent.get(node)
    return chain


def superclass_members(
    hierarchy: Hierarchy, classes: Sequence[str], superclasses: Sequence[str], balanced: bool = True
) -> list[list[str]]:
    """The ImageNet classes (wnids) under each superclass.

    Formula: members(s) = {c in classes : s is an ancestor of c}; with ``balanced``, each keeps
    its first n_min = min_s |members(s)| classes in class-index order (index = position of
    the wnid in ``sorted(classes)``, the ILSVRC class index for the full 1000 classes).

    Source: Engstrom et al., robustness library (2019), ``ImageNetHierarchy.get_subclasses``.

    Raises:
        DataError: A superclass has no class among ``classes``, or two superclasses share one.
    """
    index = {wnid: i for i, wnid in enumerate(sorted(classes))}
    members: dict[str, list[str]] = {s: [] for s in superclasses}
    for wnid in index:
        for anc in _ancestors(hierarchy, wnid):
            if anc in members:
                members[anc].append(wnid)
    empty = [s for s in superclasses if not members[s]]
    if empty:
        raise DataError(
            f"No ImageNet class folder lies under superclass(es) {', '.join(empty)} in the "
            "WordNet hierarchy: the train/ folder or wordnet.is_a.txt is incomplete."
        )
    n_min = min(len(v) for v in members.values())
    chosen = [sorted(members[s], key=index.__getitem__) for s in superclasses]
    if balanced:
        chosen = [m[:n_min] for m in chosen]
    flat = [w for m in chosen for w in m]
    if len(flat) != len(set(flat)):
        raise DataError("Two superclasses share an ImageNet class; they must be disjoint.")
    return chosen
