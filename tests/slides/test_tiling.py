"""Whole-slide tiling: tissue selection, coordinates, overlap, splits, bad inputs and resuming."""

from __future__ import annotations

import numpy as np
import pytest

from virtual_ihc.cli import main
from virtual_ihc.io.images import read_image_rgb, write_image_rgb
from virtual_ihc.slides.splits import SlideEntry, entries_from_paths
from virtual_ihc.slides.tiling import TilingOptions, plan_slide, read_manifest, tile_slides


def tile_main(argv: list[str]) -> int:
    """``python -m data_prep.tile_slides ARGV`` (``virtual-ihc tile``)."""
    return main(["tile", *argv])

#: tissue box (x0, y0, x1, y1) in level-0 pixels of a 1536 x 1024 slide scanned at 0.25 µm/px
BOX = (256, 128, 1024, 768)
#: 20x from 40x halves the slide; 64 px tiles every 32 px
OPTIONS = TilingOptions(tile_size=64, overlap=32, target_mag=20, min_tissue=0.5)


@pytest.fixture
def slide_path(make_slide, rectangle_image):
    return make_slide("case01.tif", rectangle_image(1024, 1536, BOX), mpp=0.25, min_level_side=256)


def box_fraction(x: int, y: int, size: int, downsample: float = 2.0) -> float:
    """Exact share of an output-pixel tile inside BOX."""
    x0, y0, x1, y1 = (value / downsample for value in BOX)
    overlap_x = max(0.0, min(x + size, x1) - max(x, x0))
    overlap_y = max(0.0, min(y + size, y1) - max(y, y0))
    return overlap_x * overlap_y / size ** 2


def test_plan_keeps_tissue_tiles_and_rejects_background(slide_path):
    plan = plan_slide(SlideEntry(slide_path, "he", "case01"), OPTIONS)
    assert plan.choice.level == 1 and plan.choice.scale == 1.0
    kept = set(plan.origins)
    grid = {(x, y) for y in range(0, 512 - 63, 32) for x in range(0, 768 - 63, 32)}
    assert kept <= grid
    inside = {origin for origin in grid if box_fraction(*origin, 64) == 1.0}
    outside = {origin for origin in grid if box_fraction(*origin, 64) == 0.0}
    assert inside <= kept
    assert not kept & outside
    assert all(box_fraction(*origin, 64) >= 0.25 for origin in kept)
    assert all(fraction >= OPTIONS.min_tissue for fraction in plan.fractions)


def test_tiles_are_written_with_level0_coordinates_and_overlap(slide_path, tmp_path):
    summary = tile_slides(entries_from_paths([slide_path], "he"), tmp_path / "out", OPTIONS,
                          test_fraction=0.0, progress=False)
    rows = read_manifest(summary.manifest)
    assert summary.tiled == {"case01": len(rows)} and len(rows) > 50
    assert {(row["stain"], row["split"], row["level"], row["size"]) for row in rows} == {("he", "train", "1", "64")}
    assert all(int(row["x"]) % 64 == 0 and int(row["y"]) % 64 == 0 for row in rows)  # stride 32 at 20x
    files = sorted((tmp_path / "out" / "he" / "train").glob("*.png"))
    assert len(files) == len(rows)
    left = read_image_rgb(tmp_path / "out" / "he" / "train" / "case01_x512_y384.png")
    right = read_image_rgb(tmp_path / "out" / "he" / "train" / "case01_x576_y384.png")
    assert left.shape == (64, 64, 3)
    np.testing.assert_array_equal(left[:, 32:], right[:, :32])  # 32 px of overlap at output resolution


def test_unreadable_inputs_are_skipped_and_reported(slide_path, tmp_path, capsys):
    truncated = tmp_path / "truncated.tif"
    data = slide_path.read_bytes()
    truncated.write_bytes(data[:len(data) // 2])
    (tmp_path / "empty.svs").write_bytes(b"")
    (tmp_path / "notes.txt").write_text("not a slide")
    inputs = [str(slide_path), str(truncated), str(tmp_path / "empty.svs"), str(tmp_path / "notes.txt")]
    code = tile_main([*inputs, "--stain", "he", "--out", str(tmp_path / "out"), "--target-mag", "20",
                      "--tile-size", "64", "--overlap", "32", "--test-fraction", "0", "--no-progress"])
    report = capsys.readouterr().out
    assert code == 0
    assert "skipped 3 unreadable slide(s)" in report
    for name in ("truncated.tif", "empty.svs", "notes.txt"):
        assert name in report
    assert {row["slide"] for row in read_manifest(tmp_path / "out" / "manifest.csv")} == {"case01"}


def test_missing_mpp_is_reported_with_the_option_to_set(make_slide, rectangle_image, tmp_path):
    path = make_slide("nompp.tif", rectangle_image(512, 512, (0, 0, 256, 256)), mpp=None)
    summary = tile_slides(entries_from_paths([path], "he"), tmp_path / "out", OPTIONS, progress=False)
    assert "--mpp" in summary.failed[str(path)] and "nompp.tif" in summary.failed[str(path)]


def test_rerun_skips_finished_slides_and_refuses_other_options(slide_path, tmp_path):
    entries = entries_from_paths([slide_path], "he")
    first = tile_slides(entries, tmp_path / "out", OPTIONS, progress=False)
    tile = next((tmp_path / "out" / "he").rglob("*.png"))
    stamp = tile.stat().st_mtime_ns
    second = tile_slides(entries, tmp_path / "out", OPTIONS, progress=False)
    assert second.already_done == ["case01"] and second.tiled == {}
    assert tile.stat().st_mtime_ns == stamp
    assert read_manifest(second.manifest) == read_manifest(first.manifest)
    with pytest.raises(ValueError, match="tile_size"):
        tile_slides(entries, tmp_path / "out", TilingOptions(tile_size=32, overlap=0, target_mag=20), progress=False)


def test_consecutive_sections_land_in_the_same_split_folder(make_slide, rectangle_image, tmp_path):
    table = ["path,stain,pair_id"]
    for pair in range(4):
        for stain in ("he", "ki67"):
            image = rectangle_image(512, 512, (64, 64, 448, 448), seed=pair)
            path = make_slide(f"c{pair}_{stain}.tif", image, mpp=0.5, min_level_side=256)
            table.append(f"{path.name},{stain},c{pair}")
    (tmp_path / "slides.csv").write_text("\n".join(table) + "\n")
    code = tile_main(["--slides-csv", str(tmp_path / "slides.csv"), "--out", str(tmp_path / "out"),
                      "--tile-size", "128", "--overlap", "0", "--test-fraction", "0.5", "--no-progress"])
    assert code == 0
    rows = read_manifest(tmp_path / "out" / "manifest.csv")
    split_of_pair = {}
    for row in rows:
        split_of_pair.setdefault(row["pair_id"], set()).add(row["split"])
        assert row["file"].startswith(f"{row['stain']}/{row['split']}/")
    assert all(len(splits) == 1 for splits in split_of_pair.values())
    assert sorted(next(iter(splits)) for splits in split_of_pair.values()) == ["test", "test", "train", "train"]
    for stain in ("he", "ki67"):
        for split in ("train", "test"):
            # two slides, each a 4 x 4 grid less the 4 corners (25 % tissue)
            assert len(list((tmp_path / "out" / stain / split).glob("*.png"))) == 2 * 12


def test_he_tiles_are_stain_normalised_when_asked(slide_path, rectangle_image, tmp_path):
    reference = rectangle_image(128, 128, (0, 0, 128, 128), seed=5)
    reference[:, :, 0] = 150  # a bluer H&E
    write_image_rgb(tmp_path / "reference.png", reference)
    arguments = [str(slide_path), "--stain", "he", "--target-mag", "20", "--tile-size", "64", "--overlap", "0",
                 "--test-fraction", "0", "--no-progress"]
    tile_main([*arguments, "--out", str(tmp_path / "plain")])
    tile_main([*arguments, "--out", str(tmp_path / "normalised"), "--normalize", "reinhard",
               "--target", str(tmp_path / "reference.png")])
    name = "he/train/case01_x512_y384.png"
    plain, normalised = read_image_rgb(tmp_path / "plain" / name), read_image_rgb(tmp_path / "normalised" / name)
    assert (tmp_path / "normalised" / "stain_normalization.json").exists()
    assert normalised[..., 0].mean() < plain[..., 0].mean() - 20
    write_image_rgb(tmp_path / "other.png", rectangle_image(128, 128, (0, 0, 128, 128), seed=6))
    resumed_with_other_target = tile_main([*arguments, "--out", str(tmp_path / "normalised"), "--normalize",
                                           "reinhard", "--target", str(tmp_path / "other.png")])
    assert resumed_with_other_target == 2


@pytest.mark.slow
def test_worker_processes_write_the_same_tiles(slide_path, tmp_path):
    entries = entries_from_paths([slide_path], "he")
    options = TilingOptions(tile_size=64, overlap=32, target_mag=20, tiles_per_chunk=40)
    serial = tile_slides(entries, tmp_path / "serial", options, test_fraction=0.0, progress=False)
    parallel = tile_slides(entries, tmp_path / "parallel", options, test_fraction=0.0, workers=2, progress=False)
    assert read_manifest(parallel.manifest) == read_manifest(serial.manifest)


def test_command_line_defaults_are_the_tiling_defaults():
    import argparse

    from data_prep import tiling_options
    from data_prep.tile_slides import configure_parser

    parser = argparse.ArgumentParser()
    configure_parser(parser)
    args = parser.parse_args(["slide.svs", "--stain", "he", "--out", "out"])
    assert tiling_options(args, image_format=args.image_format, tiles_per_chunk=args.tiles_per_chunk) == TilingOptions()


def test_slides_without_a_stain_are_refused(slide_path, tmp_path, capsys):
    assert tile_main([str(slide_path), "--out", str(tmp_path / "out")]) == 2
    assert "--stain" in capsys.readouterr().err


def test_tile_grid_picture_outlines_each_tile_at_the_overview_scale():
    from virtual_ihc.slides.tiling import draw_tile_grid

    overview = np.full((32, 32, 3), 255, np.uint8)
    out = draw_tile_grid(overview, [(0, 0), (64, 32)], tile_size=64, downsample=4, colour=(0, 0, 255))
    blue = (out == [0, 0, 255]).all(axis=-1)
    assert blue[0, :16].all() and blue[15, :16].all() and blue[:16, 0].all() and blue[:16, 15].all()
    assert blue[8, 16:32].any() and blue[23, 16:32].all()  # second tile: x 16-31, y 8-23 in overview pixels
    assert not blue[4:12, 4:12].any()  # inside of a tile untouched
    assert (overview == 255).all()  # the input is not drawn on
