"""Checkpoints written before the progress counters existed still resume."""

from virtual_ihc.training.checkpoints import CheckpointManager
from virtual_ihc.training.trainer import build_cycle_gan, compile_cycle_gan


def test_a_checkpoint_without_progress_counters_resumes_with_the_optimizer_step(tiny_config, tmp_path):
    config = tiny_config()
    old = build_cycle_gan(config)
    compile_cycle_gan(old, config, steps_per_epoch=3)
    old.generator_optimizer.iterations.assign(6)
    manager = CheckpointManager(tmp_path / "checkpoints", old)
    manager.epoch.assign(2)
    manager.legacy_checkpoint.write(str(tmp_path / "checkpoints" / "epoch_002" / "ckpt"))  # the earlier format

    new = build_cycle_gan(config)
    compile_cycle_gan(new, config, steps_per_epoch=3)
    assert CheckpointManager(tmp_path / "checkpoints", new).restore() == 2
    assert int(new.train_step_counter.numpy()) == 6  # every earlier step was an applied one
    assert int(new.next_element.numpy()) == 0  # unknown: the trainer falls back to epochs * steps * batch
