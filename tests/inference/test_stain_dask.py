"""``virtual-ihc stain --workers N`` / ``--scheduler``: one slide per task on a 2-worker Dask LocalCluster."""

import keras
import numpy as np
import pytest
import tifffile

from virtual_ihc.cli import main
from virtual_ihc.data.synthetic import make_layout, render_he
from virtual_ihc.export import export_saved_model
from virtual_ihc.inference.distributed import format_table, local_cluster, stain_on_cluster
from virtual_ihc.inference.model import StainModel
from virtual_ihc.inference.stitching import StitchOptions
from virtual_ihc.inference.whole_slide import StainOptions, partial_dir, stain_file
from virtual_ihc.slides.synthetic_slides import write_image_as_slide

pytestmark = pytest.mark.slow  # worker processes import TensorFlow: about 15 s for the module

DIRECTION = "he_to_ki67"
OPTIONS = StainOptions(StitchOptions(tile_size=64, overlap=16, margin=4, batch_size=4, keep_background=True),
                       compression="deflate", resume=True)
STITCH_ARGS = ["--tile-size", "64", "--overlap", "16", "--margin", "4", "--keep-background",
               "--compression", "deflate"]


def export_model(folder):
    """A SavedModel of a fixed random 3x3 conv (not the identity: outputs differ from inputs)."""
    generator = keras.Sequential([keras.Input((None, None, 3)),
                                  keras.layers.Conv2D(3, 3, padding="same", activation="tanh",
                                                      kernel_initializer=keras.initializers.GlorotUniform(seed=1))])
    return export_saved_model(generator, folder / DIRECTION)


@pytest.fixture(scope="module")
def client():
    from distributed import Client

    with local_cluster(2) as cluster, Client(cluster) as client:
        yield client


@pytest.fixture(scope="module")
def slides(tmp_path_factory):
    """Three small synthetic slides and one file that is not a slide."""
    folder = tmp_path_factory.mktemp("slides")
    for index, (height, width) in enumerate([(150, 200), (180, 130), (120, 170)]):
        rng = np.random.default_rng(index)
        write_image_as_slide(folder / f"slide{index}.tif", render_he(make_layout(rng, (height, width)), rng),
                             mpp=0.5)
    (folder / "broken.tif").write_bytes(b"not a TIFF at all")
    return folder


def read_levels(path):
    with tifffile.TiffFile(path) as tif:
        return [page.asarray() for page in tif.pages]


def good_slides(folder):
    return sorted(path for path in folder.iterdir() if path.name != "broken.tif")


def test_each_slide_is_one_task_and_equals_the_single_process_output(client, slides, tmp_path):
    model_path = export_model(tmp_path / "model")  # a path no worker has loaded yet
    jobs = [(path, tmp_path / "out" / path.name) for path in good_slides(slides)]
    (tmp_path / "out").mkdir()
    reports = stain_on_cluster(client, jobs, model_path, DIRECTION, OPTIONS)
    by_name = {report.input.name: report for report in reports}
    local_model = StainModel(model_path)
    for path in good_slides(slides):
        report = by_name[path.name]
        assert not report.failed and report.attempts == 1 and report.errors == []
        expected = stain_file(path, tmp_path / "local" / path.name, local_model, OPTIONS)
        assert report.result.tiles_run == expected.tiles_run > 0
        for level, reference in zip(read_levels(report.output), read_levels(expected.output), strict=True):
            np.testing.assert_array_equal(level, reference)
    # three slides: each worker that stained one loaded the model for its first slide only
    workers = {report.worker for report in reports}
    assert sum(report.model_loaded for report in reports) == len(workers) < len(reports)


def test_a_failing_slide_is_retried_once_then_reported_and_the_others_finish(client, slides, tmp_path):
    (tmp_path / "out").mkdir()
    jobs = [(path, tmp_path / "out" / path.name) for path in sorted(slides.iterdir())]
    reports = stain_on_cluster(client, jobs, export_model(tmp_path / "model"), DIRECTION, OPTIONS)
    broken = next(report for report in reports if report.input.name == "broken.tif")
    assert broken.failed and broken.attempts == 2
    assert len(broken.errors) == 2 and all(error.startswith("SlideReadError") for error in broken.errors)
    assert not (tmp_path / "out" / "broken.tif").exists()
    assert all(report.output.is_file() and report.attempts == 1 for report in reports if report is not broken)
    table = format_table(reports, 1.0)
    assert "broken.tif: FAILED after 2 attempts: SlideReadError" in table
    assert "3 stained, 0 skipped, 1 failed of 4" in table


def test_cli_on_a_scheduler_prints_the_table_and_a_rerun_skips_finished_slides(client, slides, tmp_path, capsys):
    model_path = export_model(tmp_path / "model")
    out = tmp_path / "out"
    command = ["stain", str(slides), str(out), "--model", str(model_path), "--resume",
               "--scheduler", client.scheduler.address, *STITCH_ARGS]
    assert main(command) == 1  # one slide failed
    first = capsys.readouterr().out
    for path in good_slides(slides):
        assert (out / path.name).is_file() and path.name in first
    assert "3 stained, 0 skipped, 1 failed of 4" in first
    modified = {path: (out / path.name).stat().st_mtime_ns for path in good_slides(slides)}
    assert main(command) == 1
    second = capsys.readouterr().out
    assert "0 stained, 3 skipped, 1 failed of 4" in second
    assert {path: (out / path.name).stat().st_mtime_ns for path in good_slides(slides)} == modified


class InterruptingModel:
    """``StainModel`` that raises ``KeyboardInterrupt`` once ``fail_after`` tiles are done (a crashed run)."""

    def __init__(self, model, fail_after):
        self.model, self.path, self.fail_after, self.tiles = model, model.path, fail_after, 0

    def __call__(self, tiles):
        if self.tiles + len(tiles) > self.fail_after:
            raise KeyboardInterrupt("simulated crash")
        self.tiles += len(tiles)
        return self.model(tiles)


def test_a_worker_continues_an_interrupted_slide_from_its_partial_state(client, slides, tmp_path):
    model_path = export_model(tmp_path / "model")
    slide, output = slides / "slide0.tif", tmp_path / "out" / "slide0.tif"
    output.parent.mkdir()
    local_model = StainModel(model_path)
    with pytest.raises(KeyboardInterrupt):
        stain_file(slide, output, InterruptingModel(local_model, fail_after=8), OPTIONS)
    assert partial_dir(output).is_dir() and not output.exists()
    [report] = stain_on_cluster(client, [(slide, output)], model_path, DIRECTION, OPTIONS)
    assert report.result.rows_resumed == 2  # 4 tiles a row: rows 0 and 1 were finished before the crash
    expected = stain_file(slide, tmp_path / "reference.tif", local_model, OPTIONS)
    assert report.result.tiles_run == expected.tiles_run - 8
    for level, reference in zip(read_levels(output), read_levels(expected.output), strict=True):
        np.testing.assert_array_equal(level, reference)


def test_cli_starts_a_local_cluster_with_workers(slides, tmp_path, capsys):
    inputs = tmp_path / "in"
    inputs.mkdir()
    for path in good_slides(slides)[:2]:
        (inputs / path.name).write_bytes(path.read_bytes())
    code = main(["stain", str(inputs), str(tmp_path / "out"), "--model", str(export_model(tmp_path / "model")),
                 "--workers", "2", *STITCH_ARGS])
    assert code == 0
    assert "2 stained, 0 skipped, 0 failed of 2" in capsys.readouterr().out
    assert sorted(path.name for path in (tmp_path / "out").iterdir()) == ["slide0.tif", "slide1.tif"]


def test_workers_must_be_positive(slides, tmp_path, capsys):
    code = main(["stain", str(slides), str(tmp_path / "out"), "--model", str(export_model(tmp_path / "model")),
                 "--workers", "0"])
    assert code == 2 and "--workers must be at least 1" in capsys.readouterr().err


def test_local_workers_share_the_cores_between_their_tensorflows(client):
    import os

    expected = os.environ.get("TF_NUM_INTRAOP_THREADS") or str(max(1, len(os.sched_getaffinity(0)) // 2))
    seen = client.run(lambda: os.environ.get("TF_NUM_INTRAOP_THREADS"))  # runs in each worker process
    assert list(seen.values()) == [expected, expected]
