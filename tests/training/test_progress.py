"""The training progress display: a few metrics, narrow lines."""

import re

import keras

from virtual_ihc.models.cycle_gan import TEST_METRICS, TRAIN_METRICS
from virtual_ihc.training.callbacks import ProgressDisplay, progress_mode


def _logs(value=1.23456):
    return {**{key: value for key in TRAIN_METRICS}, **{f"val_{key}": value for key in TEST_METRICS},
            "learning_rate": 2e-4}


def test_the_bar_shows_a_few_metrics_on_a_line_that_fits_a_terminal(capsys, monkeypatch):
    monkeypatch.setattr(keras.utils.Progbar, "_dynamic_display", True, raising=False)
    display = ProgressDisplay("bar", epochs=3, steps_per_epoch=4)
    display.on_epoch_begin(0)
    for batch in range(4):
        display.on_train_batch_end(batch, _logs())
    display.on_epoch_end(0, _logs())
    shown = re.sub(r"\x1b\[[0-9;]*m|\x08", "", capsys.readouterr().out)  # colours and backspaces
    lines = [line for chunk in shown.split("\r") for line in chunk.splitlines()]
    assert 0 < max(len(line.rstrip()) for line in lines) < 140
    assert any("generator_loss" in line for line in lines)
    assert not any("adversarial_he_to_ki67_loss" in line or "learning_rate" in line for line in lines)


def test_one_line_per_epoch_when_asked_or_when_stdout_is_not_a_terminal(capsys):
    display = ProgressDisplay(progress_mode("auto"), epochs=2, steps_per_epoch=4)  # pytest captures stdout
    for epoch in range(2):
        display.on_epoch_begin(epoch)
        for batch in range(4):
            display.on_train_batch_end(batch, _logs())
        display.on_epoch_end(epoch, _logs())
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(" - ")[0] for line in lines] == ["epoch 1/2", "epoch 2/2"]
    assert all(len(line) < 200 and "val_he_cycle_ssim" in line for line in lines)
    assert progress_mode("0") is None and progress_mode("1") == "bar" and progress_mode("2") == "line"
