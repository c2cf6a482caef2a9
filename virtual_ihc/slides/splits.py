"""Which slides are for training and which are held out: splits by slide, never by tile.

A slide is a :class:`SlideEntry` (file, stain, optional pair and patient ids).
Slides linked by a pair id (consecutive sections) or a patient id form one
group, and a group lies wholly in one split, so no slide, pair or patient is in
both. Groups are ranked by a hash of their ids and the seed, so a split does not
depend on the order of the inputs.

Slide table (``--slides-csv``), one row per slide; only ``path`` and ``stain`` are
required, relative paths are relative to the table's folder::

    path,stain,pair_id,patient_id,split
    slides/case01_he.svs,he,case01,P001,
    slides/case01_ki67.svs,ki67,case01,P001,
    slides/case02_he.svs,he,case02,P002,test
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import os
import re
from pathlib import Path

from virtual_ihc.errors import InputError

STAINS = ("he", "ki67")
SPLITS = ("train", "test")
TABLE_COLUMNS = ("path", "stain", "slide_id", "pair_id", "patient_id", "split")
#: default share of slide groups held out for testing
TEST_FRACTION = 0.2


@dataclasses.dataclass(frozen=True)
class SlideEntry:
    """One slide to tile.

    Attributes:
        path: slide file.
        stain: ``"he"`` or ``"ki67"``.
        slide_id: unique name used in tile names and the manifest (default: file stem).
        pair_id: shared by the consecutive H&E and Ki-67 sections of one block ("" = none).
        patient_id: shared by all slides of one patient ("" = none).
        split: ``"train"``, ``"test"`` or ``""`` (to be assigned).
    """

    path: Path
    stain: str
    slide_id: str
    pair_id: str = ""
    patient_id: str = ""
    split: str = ""

    def __post_init__(self):
        if self.stain not in STAINS:
            raise InputError(f"{self.path}: stain must be one of {STAINS}, got {self.stain!r}")
        if self.split not in SPLITS + ("",):
            raise InputError(f"{self.path}: split must be one of {SPLITS} or empty, got {self.split!r}")


def slide_id_for(path: str | os.PathLike) -> str:
    """File name without its extension(s), reduced to ``[A-Za-z0-9._-]`` (safe in file names)."""
    name = Path(path).name.split(".")[0] or Path(path).name
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name)


def entries_from_paths(paths: list[str | os.PathLike], stain: str) -> list[SlideEntry]:
    """Slides of one stain given on the command line; each slide is its own group."""
    return [SlideEntry(path=Path(path), stain=stain, slide_id=slide_id_for(path)) for path in paths]


def read_slide_table(csv_path: str | os.PathLike) -> list[SlideEntry]:
    """Slides listed in a CSV table (see the module docstring).

    Raises:
        ValueError: a required column is missing or a row is invalid (message names the row).
    """
    csv_path = Path(csv_path)
    with open(csv_path, newline="") as handle:
        reader = csv.DictReader(handle)
        missing = {"path", "stain"} - set(reader.fieldnames or ())
        if missing:
            raise InputError(f"{csv_path}: missing column(s) {sorted(missing)}; expected {TABLE_COLUMNS}")
        entries = []
        for line, row in enumerate(reader, start=2):
            row = {key: (value or "").strip() for key, value in row.items() if key}
            path = Path(row["path"])
            path = path if path.is_absolute() else csv_path.parent / path
            try:
                entries.append(SlideEntry(path=path, stain=row["stain"].lower(),
                                          slide_id=row.get("slide_id") or slide_id_for(path),
                                          pair_id=row.get("pair_id", ""), patient_id=row.get("patient_id", ""),
                                          split=row.get("split", "").lower()))
            except ValueError as error:
                raise InputError(f"{csv_path}, line {line}: {error}") from error
    return entries


def write_slide_table(csv_path: str | os.PathLike, entries: list[SlideEntry]) -> Path:
    """Write entries (with their splits) in the format :func:`read_slide_table` reads."""
    csv_path = Path(csv_path)
    csv_path.parent.mkdir(parents=True, exist_ok=True)
    with open(csv_path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=TABLE_COLUMNS)
        writer.writeheader()
        for entry in entries:
            writer.writerow({**dataclasses.asdict(entry), "path": str(Path(entry.path).resolve())})
    return csv_path


def slide_groups(entries: list[SlideEntry]) -> list[list[int]]:
    """Indices of entries grouped by shared pair or patient id (connected components)."""
    parent = list(range(len(entries)))

    def root(index: int) -> int:
        while parent[index] != index:
            parent[index] = parent[parent[index]]
            index = parent[index]
        return index

    first_with = {}
    for index, entry in enumerate(entries):
        for key in (("pair", entry.pair_id), ("patient", entry.patient_id)):
            if not key[1]:
                continue
            if key in first_with:
                parent[root(index)] = root(first_with[key])
            else:
                first_with[key] = index
    groups: dict[int, list[int]] = {}
    for index in range(len(entries)):
        groups.setdefault(root(index), []).append(index)
    return list(groups.values())


def _group_rank(entries: list[SlideEntry], group: list[int], seed: int) -> str:
    key = ",".join(sorted(entries[index].slide_id for index in group))
    return hashlib.sha256(f"{seed}:{key}".encode()).hexdigest()


def assign_splits(entries: list[SlideEntry], test_fraction: float = TEST_FRACTION, seed: int = 0,
                  test_ids: tuple[str, ...] | list[str] = ()) -> list[SlideEntry]:
    """Entries with ``split`` set, keeping every group in one split.

    Args:
        entries: slides; an entry's own ``split`` is kept and spreads to its group.
        test_fraction: share of groups (patients / pairs / single slides) held out.
        seed: changes which groups are drawn.
        test_ids: slide, pair or patient ids whose groups go to the test split.

    Raises:
        ValueError: duplicate slide ids, a fraction outside [0, 1], or a group with
            slides explicitly in both splits.
    """
    if not 0.0 <= test_fraction <= 1.0:
        raise InputError(f"test fraction must be in [0, 1], got {test_fraction}")
    ids = [entry.slide_id for entry in entries]
    duplicates = sorted({slide_id for slide_id in ids if ids.count(slide_id) > 1})
    if duplicates:
        raise InputError(f"slide ids must be unique (they name the tiles), repeated: {duplicates}")
    wanted_test = set(test_ids)
    groups = slide_groups(entries)
    group_split = {}
    for number, group in enumerate(groups):
        fixed = {entries[index].split for index in group} - {""}
        if any({entries[index].slide_id, entries[index].pair_id, entries[index].patient_id} & wanted_test
               for index in group):
            fixed.add("test")
        if len(fixed) > 1:
            names = sorted(entries[index].slide_id for index in group)
            raise InputError(f"slides {names} share a pair or patient id but are assigned to both splits")
        if fixed:
            group_split[number] = fixed.pop()
    test_target = round(test_fraction * len(groups))
    if test_fraction > 0 and test_target == 0 and len(groups) > 1:
        test_target = 1
    free = sorted((number for number in range(len(groups)) if number not in group_split),
                  key=lambda number: _group_rank(entries, groups[number], seed))
    test_count = sum(split == "test" for split in group_split.values())
    for number in free:
        group_split[number] = "test" if test_count < test_target else "train"
        test_count += group_split[number] == "test"
    split_of = {index: group_split[number] for number, group in enumerate(groups) for index in group}
    return [dataclasses.replace(entry, split=split_of[index]) for index, entry in enumerate(entries)]


def leaked_ids(entries: list[SlideEntry]) -> dict[str, set[str]]:
    """Slide, pair and patient ids found in both splits (empty sets when the split is clean)."""
    leaks = {}
    for field in ("slide_id", "pair_id", "patient_id"):
        train = {getattr(entry, field) for entry in entries if entry.split == "train"} - {""}
        test = {getattr(entry, field) for entry in entries if entry.split == "test"} - {""}
        leaks[field] = train & test
    return leaks
