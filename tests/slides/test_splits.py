"""Slide-level splits: groups by pair and patient, never split across train and test."""

from __future__ import annotations

from pathlib import Path

import pytest

from virtual_ihc.slides.splits import (SlideEntry, assign_splits, entries_from_paths, leaked_ids, read_slide_table,
                                       slide_groups, slide_id_for, write_slide_table)


def paired_cohort(patients: int = 6, blocks_per_patient: int = 2) -> list[SlideEntry]:
    """An H&E and a Ki-67 slide for every block of every patient."""
    entries = []
    for patient in range(patients):
        for block in range(blocks_per_patient):
            pair = f"P{patient}B{block}"
            for stain in ("he", "ki67"):
                entries.append(SlideEntry(Path(f"{pair}_{stain}.svs"), stain, f"{pair}_{stain}",
                                          pair_id=pair, patient_id=f"P{patient}"))
    return entries


def test_groups_join_slides_through_pairs_and_patients():
    entries = [SlideEntry(Path("a"), "he", "a", pair_id="1"), SlideEntry(Path("b"), "ki67", "b", pair_id="1"),
               SlideEntry(Path("c"), "he", "c", patient_id="X"), SlideEntry(Path("d"), "ki67", "d", pair_id="2"),
               SlideEntry(Path("e"), "he", "e", pair_id="2", patient_id="X"), SlideEntry(Path("f"), "he", "f")]
    groups = sorted(sorted(entries[index].slide_id for index in group) for group in slide_groups(entries))
    assert groups == [["a", "b"], ["c", "d", "e"], ["f"]]


@pytest.mark.parametrize("seed", range(5))
def test_no_slide_pair_or_patient_lands_in_both_splits(seed):
    entries = assign_splits(paired_cohort(), test_fraction=0.34, seed=seed)
    assert {entry.split for entry in entries} == {"train", "test"}
    assert leaked_ids(entries) == {"slide_id": set(), "pair_id": set(), "patient_id": set()}


def test_test_fraction_counts_groups():
    entries = assign_splits(paired_cohort(patients=10), test_fraction=0.3, seed=1)
    test_patients = {entry.patient_id for entry in entries if entry.split == "test"}
    assert len(test_patients) == 3


def test_pairs_without_patient_ids_stay_together():
    entries = [entry for entry in paired_cohort(patients=5)]
    entries = [SlideEntry(entry.path, entry.stain, entry.slide_id, pair_id=entry.pair_id) for entry in entries]
    assigned = assign_splits(entries, test_fraction=0.5, seed=3)
    by_pair = {}
    for entry in assigned:
        by_pair.setdefault(entry.pair_id, set()).add(entry.split)
    assert all(len(splits) == 1 for splits in by_pair.values())
    assert sum(splits == {"test"} for splits in by_pair.values()) == 5


def test_split_does_not_depend_on_input_order():
    entries = paired_cohort()
    forward = {entry.slide_id: entry.split for entry in assign_splits(entries, 0.3, seed=7)}
    backward = {entry.slide_id: entry.split for entry in assign_splits(entries[::-1], 0.3, seed=7)}
    assert forward == backward


def test_explicit_test_ids_pull_their_whole_group():
    entries = assign_splits(paired_cohort(), test_fraction=0.0, test_ids=["P2B1_ki67"])
    test = {entry.slide_id for entry in entries if entry.split == "test"}
    assert test == {f"P2B{block}_{stain}" for block in range(2) for stain in ("he", "ki67")}


def test_explicit_split_spreads_to_group_and_conflicts_are_refused():
    entries = paired_cohort(patients=2)
    entries[0] = SlideEntry(entries[0].path, "he", entries[0].slide_id, entries[0].pair_id,
                            entries[0].patient_id, split="test")
    assigned = assign_splits(entries, test_fraction=0.0)
    assert {entry.split for entry in assigned if entry.patient_id == "P0"} == {"test"}
    entries[1] = SlideEntry(entries[1].path, "ki67", entries[1].slide_id, entries[1].pair_id,
                            entries[1].patient_id, split="train")
    with pytest.raises(ValueError, match="both splits"):
        assign_splits(entries)


def test_duplicate_slide_ids_are_refused():
    with pytest.raises(ValueError, match="unique"):
        assign_splits(entries_from_paths(["a/s1.svs", "b/s1.svs"], "he"))


def test_slide_table_round_trip_and_relative_paths(tmp_path):
    table = tmp_path / "slides.csv"
    table.write_text("path,stain,pair_id,patient_id\nimgs/c1 he.svs,he,c1,P1\nimgs/c1_ki67.svs,KI67,c1,P1\n")
    entries = read_slide_table(table)
    assert entries[0].path == tmp_path / "imgs" / "c1 he.svs"
    assert entries[0].slide_id == "c1_he" and entries[1].stain == "ki67"
    written = write_slide_table(tmp_path / "out.csv", assign_splits(entries, 0.0))
    again = read_slide_table(written)
    assert [(entry.slide_id, entry.split, entry.pair_id) for entry in again] == [("c1_he", "train", "c1"),
                                                                                ("c1_ki67", "train", "c1")]


def test_slide_table_rejects_unknown_stain(tmp_path):
    table = tmp_path / "slides.csv"
    table.write_text("path,stain\na.svs,pas\n")
    with pytest.raises(ValueError, match="line 2"):
        read_slide_table(table)


def test_slide_id_strips_all_extensions():
    assert slide_id_for("/data/case 01.ome.tiff") == "case_01"
