"""One error contract for every command: input errors share a base class and exit 2 with one line."""

import pytest

from virtual_ihc import runtime
from virtual_ihc.config import ConfigError
from virtual_ihc.data.index import DataError
from virtual_ihc.errors import InputError, RunFailure
from virtual_ihc.evaluation.tiles import EvaluationInputError
from virtual_ihc.inference.model import ModelNotFoundError
from virtual_ihc.io.images import ImageReadError
from virtual_ihc.io.slides import SlideMetadataError, SlideReadError
from virtual_ihc.training.trainer import TrainingDivergedError
from virtual_ihc.viewer.deep_zoom import SlideOpenError
from virtual_ihc.weights import WeightsError


@pytest.mark.parametrize("error_type", [ConfigError, DataError, EvaluationInputError, ImageReadError, ModelNotFoundError,
                                        SlideMetadataError, SlideOpenError, SlideReadError, WeightsError])
def test_every_bad_input_error_is_an_input_error_and_exits_2(error_type):
    assert issubclass(error_type, InputError) and issubclass(error_type, ValueError)
    assert runtime.exit_status(error_type("bad")) == runtime.EXIT_INPUT == 2


def test_errors_that_were_os_errors_still_are():
    assert issubclass(ModelNotFoundError, FileNotFoundError) and issubclass(WeightsError, OSError)


def test_a_missing_file_exits_2_a_failed_run_1_and_anything_else_is_not_reported():
    assert runtime.exit_status(FileNotFoundError("gone")) == 2
    assert runtime.exit_status(NotADirectoryError("a file")) == 2
    assert issubclass(TrainingDivergedError, RunFailure)
    assert runtime.exit_status(TrainingDivergedError("diverged")) == runtime.EXIT_FAILURE == 1
    assert runtime.exit_status(KeyError("a bug")) is None
    with pytest.raises(ValueError, match="not a reported failure"):
        runtime.report_error("virtual-ihc train", KeyError("a bug"))


def test_the_report_is_one_line_naming_the_command(capsys):
    assert runtime.report_error("virtual-ihc tile", InputError("first line\n  second line\n")) == 2
    assert capsys.readouterr().err == "virtual-ihc tile: error: first line second line\n"


def test_a_new_failure_kind_is_one_row_of_the_table(monkeypatch):
    class DiskFull(OSError):
        pass

    monkeypatch.setattr(runtime, "EXIT_STATUSES", [(DiskFull, 1), *runtime.EXIT_STATUSES])
    assert runtime.exit_status(DiskFull("no space left")) == 1
