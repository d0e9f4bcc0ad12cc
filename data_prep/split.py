"""Deterministic, stratified, group-aware train/val/test split.

`assign_splits` is a pure function of (labels, groups, pixel hashes, fractions, seed):
  * stratified by label: each class is split to its own targets (within +-1 image per split
    when there are no groups);
  * no group (patient) crosses splits, and identical images (same pixel sha256) are one unit,
    so an exact duplicate never sits in train and test at once;
  * every class appears in every split with a non-zero fraction, or a DataError says how many
    images the class has and how many it needs.
"""
from __future__ import annotations

import numpy as np

from data_prep.errors import DataError

SPLITS = ("train", "val", "test")


def _units(groups: np.ndarray, hashes: np.ndarray) -> np.ndarray:
    """Union-find: images sharing a non-empty group or a pixel hash form one unit -> unit id per image."""
    n = len(groups)
    parent = np.arange(n)

    def find(i: int) -> int:
        root = i
        while parent[root] != root:
            root = parent[root]
        while parent[i] != root:
            parent[i], i = root, parent[i]
        return root

    for keys in (groups, hashes):
        first: dict[str, int] = {}
        for i, k in enumerate(keys):
            if k == "":
                continue
            j = first.setdefault(k, i)
            if j != i:
                a, b = find(i), find(j)
                if a != b:
                    parent[max(a, b)] = min(a, b)
    return np.array([find(i) for i in range(n)])


def split_targets(n: int, fractions: tuple[float, float, float], class_name: str) -> list[int]:
    """Images of one class per split; every split with a non-zero fraction gets at least one."""
    needed = sum(1 for f in fractions if f > 0)
    if n < needed:
        names = [s for s, f in zip(SPLITS, fractions) if f > 0]
        raise DataError(f"class {class_name!r} has {n} image(s); it needs at least {needed} to appear in "
                        f"{', '.join(names)} (fractions {'/'.join(f'{f:g}' for f in fractions)})")
    val = max(1, round(n * fractions[1])) if fractions[1] > 0 else 0
    test = max(1, round(n * fractions[2])) if fractions[2] > 0 else 0
    while n - val - test < 1:  # tiny classes: train keeps at least one image
        if val >= test and val > 1:
            val -= 1
        else:
            test -= 1
    return [n - val - test, val, test]


def assign_splits(labels: np.ndarray, groups: np.ndarray, hashes: np.ndarray,
                  fractions: tuple[float, float, float], seed: int,
                  class_names: list[str] | None = None) -> np.ndarray:
    """-> array of "train"/"val"/"test", one per image."""
    labels = np.asarray(labels)
    n = len(labels)
    unit_of = _units(np.asarray(groups, dtype=object), np.asarray(hashes, dtype=object))
    unit_ids, unit_index = np.unique(unit_of, return_inverse=True)
    unit_size = np.bincount(unit_index)
    # a unit's stratum is its most common label (a patient's images nearly always share one)
    order_by_unit = np.argsort(unit_index, kind="stable")
    members_of = np.split(order_by_unit, np.cumsum(unit_size)[:-1])
    unit_label = np.empty(len(unit_ids), dtype=labels.dtype)
    for u, idx in enumerate(members_of):
        vals, counts = np.unique(labels[idx], return_counts=True)
        unit_label[u] = vals[np.argmax(counts)]
    out = np.empty(n, dtype=object)
    rng = np.random.default_rng(seed)
    for lab in np.unique(labels):
        name = class_names[int(lab)] if class_names is not None else str(lab)
        members = np.flatnonzero(unit_label == lab)
        targets = split_targets(int(unit_size[members].sum()), fractions, name)
        order = members[rng.permutation(len(members))]
        filled = [0, 0, 0]
        for u in order:
            deficits = [t - f for t, f in zip(targets, filled)]
            s = int(np.argmax(deficits))  # ties -> train, val, test in that order
            out[members_of[u]] = SPLITS[s]
            filled[s] += int(unit_size[u])
    for lab in np.unique(labels):
        name = class_names[int(lab)] if class_names is not None else str(lab)
        for s, f in zip(SPLITS, fractions):
            if f > 0 and not np.any((labels == lab) & (out == s)):
                n_groups = len(np.unique(unit_index[labels == lab]))
                raise DataError(f"class {name!r} cannot appear in the {s} split: its images form only "
                                f"{n_groups} group(s)/duplicate set(s), too few for fractions "
                                f"{'/'.join(f'{x:g}' for x in fractions)}")
    return out


def carve_val_from_train(labels: np.ndarray, given: np.ndarray, groups: np.ndarray, hashes: np.ndarray,
                         fractions: tuple[float, float, float], seed: int,
                         class_names: list[str] | None = None) -> np.ndarray:
    """Given train/test only: split the given train into train+val (stratified), keep test."""
    out = given.astype(object).copy()
    tr = np.flatnonzero(given == "train")
    f_train, f_val = fractions[0], fractions[1]
    sub = assign_splits(labels[tr], groups[tr], hashes[tr],
                        (f_train / (f_train + f_val), f_val / (f_train + f_val), 0.0), seed, class_names)
    out[tr] = sub
    return out


HELD_OUT_RANK = {"train": 0, "val": 1, "test": 2}  # test is the most held-out split


def move_units_to_most_held_out(split: np.ndarray, keys) -> tuple[np.ndarray, int]:
    """Images sharing a non-empty key form one unit; a unit spread over several splits goes whole to the most
    held-out split holding one of its images (test > val > train), so evaluation keeps every image it had.

    Returns the new split array and how many images moved (reported by the CLI, never silent)."""
    out = split.copy()
    moved = 0
    by_key: dict[str, list[int]] = {}
    for i, k in enumerate(keys):
        if k != "":
            by_key.setdefault(k, []).append(i)
    for idx in by_key.values():
        if len(idx) < 2:
            continue
        target = max((out[i] for i in idx), key=HELD_OUT_RANK.__getitem__)
        for i in idx:
            if out[i] != target:
                out[i] = target
                moved += 1
    return out, moved


def unify_duplicates_across_given_splits(split: np.ndarray, hashes: np.ndarray) -> tuple[np.ndarray, int]:
    """Given splits may hold the same image twice; move every copy to its most held-out split.

    Returns the new split array and how many images moved (reported by the CLI, never silent).
    """
    return move_units_to_most_held_out(split, hashes)


def crossing_groups(split: np.ndarray, groups: np.ndarray) -> list[str]:
    """Non-empty groups (patients) whose images sit in more than one split, sorted."""
    seen: dict[str, set] = {}
    for g, s in zip(groups, split):
        if g != "":
            seen.setdefault(g, set()).add(s)
    return sorted(g for g, splits in seen.items() if len(splits) > 1)


def move_crossing_groups(split: np.ndarray, groups: np.ndarray, hashes: np.ndarray) -> tuple[np.ndarray, int, int]:
    """Each group (patient) with images in several splits goes whole to the most held-out split holding one of
    them. Groups and exact duplicates are joined first (a duplicate of a moved image moves with it), so no patient
    and no identical image straddles splits afterwards. -> (split, images moved, groups that crossed)."""
    n_groups = len(crossing_groups(split, groups))
    if not n_groups:
        return split, 0, 0
    units = _units(np.asarray(groups, dtype=object), np.asarray(hashes, dtype=object)).astype(str)
    out, moved = move_units_to_most_held_out(split, units)
    return out, moved, n_groups
