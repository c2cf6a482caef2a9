"""Multi-worker training: two local worker processes under MultiWorkerMirroredStrategy (TF_CONFIG on 127.0.0.1).

The tiny run has two distinct tiles per stain, no augmentation and no image pool, so every global batch
holds the same two tiles in one process (batch 2) and on two workers (one tile each): the losses are means
over the global batch, so the two-worker run must compute what the one-process run computes, up to float32
rounding. Adam turns rounding noise in the gradients of the biases that instance norm cancels into weight
differences of about 1e-5 that change nothing the networks compute, so the two are compared by their
outputs; and only over 6 steps, because GAN updates on 32-pixel tiles amplify rounding differences
(the same run with its batch order swapped: outputs within 2e-6 after 6 steps, 1e-2 after 18).
"""

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from tests_support import tiny_overrides
from virtual_ihc.config import ConfigError, resolve_config
from virtual_ihc.data.synthetic import sample_tiles
from virtual_ihc.training.checkpoints import list_checkpoints
from virtual_ihc.training.checkpoints import load_generators
from virtual_ihc.training.cli import EXIT_WORKER_LOST
from virtual_ihc.training.trainer import run_training

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
EPOCHS, STEPS = 3, 2
#: largest difference of the generators' outputs (in [-1, 1]) between two workers and one process
OUTPUT_TOLERANCE = 1e-4
#: seconds a worker may take before the test kills the cluster and fails
TIMEOUT = 420

#: runs a training; saves its final state (every network's weights, both optimizers' variables) and outputs
DRIVER = """
import json, sys
import numpy as np
sys.path[:0] = [sys.argv[3], sys.argv[3] + "/.."]  # this test module and tests_support
from test_multiworker import final_state, generator_outputs
from virtual_ihc.config import resolve_config
from virtual_ihc.training.trainer import run_training
model = run_training(resolve_config(cli_values=json.load(open(sys.argv[1])))).model
np.savez(sys.argv[2], *final_state(model), *generator_outputs(model.generator_he_to_ki67, model.generator_ki67_to_he))
"""


def final_state(model) -> list[np.ndarray]:
    networks = (model.generator_he_to_ki67, model.generator_ki67_to_he, model.discriminator_he,
                model.discriminator_ki67)
    variables = [w for network in networks for w in network.weights]
    variables += model.generator_optimizer.variables + model.discriminator_optimizer.variables
    return [np.asarray(variable) for variable in variables]


def generator_outputs(he_to_ki67, ki67_to_he) -> list[np.ndarray]:
    """Both generators' outputs on fixed sample tiles (float32 in [-1, 1])."""
    he, ki67 = (sample_tiles(stain, 2, 32, seed=9).astype(np.float32) / 127.5 - 1.0 for stain in ("he", "ki67"))
    return [np.asarray(he_to_ki67(he, training=False)), np.asarray(ki67_to_he(ki67, training=False))]


def _overrides(out, distribute="multiworker"):
    return tiny_overrides(out, data={"sample_train_tiles": 2, "sample_val_tiles": 2, "augment": False},
                          train={"epochs": EPOCHS, "steps_per_epoch": STEPS, "batch_size": 2, "pool_size": 0,
                                 "distribute": distribute, "pathology_guard": False, "export": False,
                                 "verbose": "2"})


def _free_ports(count):
    with contextlib.ExitStack() as stack:
        sockets = [stack.enter_context(socket.socket()) for _ in range(count)]
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]


class Cluster:
    """Worker processes started with ``TF_CONFIG``; every one still running is killed on exit."""

    def __init__(self, ports, logs: Path):
        self.ports, self.logs = ports, logs
        self.processes: list[subprocess.Popen] = []

    def start(self, commands, tag):
        self.processes = []
        for index, command in enumerate(commands):
            tf_config = {"cluster": {"worker": [f"127.0.0.1:{port}" for port in self.ports]},
                         "task": {"type": "worker", "index": index}}
            env = {**os.environ, "TF_CONFIG": json.dumps(tf_config), "TF_CPP_MIN_LOG_LEVEL": "2",
                   "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
            log = open(self.logs / f"{tag}_worker{index}.log", "w")
            self.processes.append(subprocess.Popen(command, cwd=self.logs, env=env, stdout=log,
                                                   stderr=subprocess.STDOUT))
            log.close()

    def log(self, index, tag) -> str:
        return (self.logs / f"{tag}_worker{index}.log").read_text()

    def wait(self, index, tag, timeout=TIMEOUT) -> int:
        try:
            return self.processes[index].wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            pytest.fail(f"worker {index} ({tag}) still running after {timeout} s:\n{self.log(index, tag)[-3000:]}")

    def kill(self):
        for process in self.processes:
            if process.poll() is None:
                process.kill()
                process.wait()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.kill()


@pytest.fixture(scope="module")
def one_process(tmp_path_factory):
    """The same training in this process (the default strategy, batch 2): ``(state, outputs, history)``."""
    result = run_training(resolve_config(cli_values=_overrides(tmp_path_factory.mktemp("single") / "run",
                                                               distribute="none")))
    model = result.model
    return final_state(model), generator_outputs(model.generator_he_to_ki67, model.generator_ki67_to_he), \
        result.history


def _largest_difference(ours, theirs):
    return max(float(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64)).max())
               for a, b in zip(ours, theirs, strict=True))


def test_two_workers_end_with_identical_weights_equal_to_one_process(tmp_path, one_process):
    config_file = tmp_path / "config.json"
    config_file.write_text(json.dumps(_overrides(tmp_path / "run")))
    with Cluster(_free_ports(2), tmp_path) as cluster:
        cluster.start([[sys.executable, "-c", DRIVER, str(config_file), str(tmp_path / f"state{index}.npz"),
                        str(Path(__file__).parent)] for index in range(2)], "fit")
        for index in range(2):
            assert cluster.wait(index, "fit") == 0, cluster.log(index, "fit")[-3000:]
    saved = [list(np.load(tmp_path / f"state{index}.npz").values()) for index in range(2)]
    for chief_value, worker_value in zip(*saved, strict=True):
        np.testing.assert_array_equal(chief_value, worker_value)  # weights, optimizer states and outputs
    state, outputs, history = one_process
    assert len(saved[0]) == len(state) + 2
    after_first_epoch = generator_outputs(*load_generators(tmp_path / "run", epoch=1).values())
    moved = _largest_difference(outputs, after_first_epoch)
    difference = _largest_difference(saved[0][-2:], outputs)
    assert moved > 10 * OUTPUT_TOLERANCE
    assert difference <= OUTPUT_TOLERANCE, f"outputs, two workers vs one process: {difference:.3g}"
    rows = (tmp_path / "run" / "history.csv").read_text().splitlines()
    header = rows[0].split(",")
    last = dict(zip(header, rows[-1].split(",")))
    assert len(rows) == 1 + EPOCHS
    for key in ("generator_loss", "discriminator_he_loss", "discriminator_ki67_loss"):
        assert float(last[key]) == pytest.approx(history[key][-1], rel=1e-4), key
    assert [epoch for epoch, _ in list_checkpoints(tmp_path / "run" / "checkpoints")] == list(range(1, EPOCHS + 1))


def test_a_killed_worker_is_relaunched_and_training_resumes_from_the_last_checkpoint(tmp_path, one_process):
    run_dir = tmp_path / "run"
    config_file = tmp_path / "config.json"
    config_file.write_text(json.dumps(_overrides(run_dir)))
    command = [sys.executable, str(ROOT / "train.py"), "--config", str(config_file)]
    with Cluster(_free_ports(2), tmp_path) as cluster:
        cluster.start([command, command], "first")
        deadline = time.monotonic() + TIMEOUT
        while not list_checkpoints(run_dir / "checkpoints"):
            assert all(process.poll() is None for process in cluster.processes), cluster.log(0, "first")[-3000:]
            if time.monotonic() > deadline:
                cluster.kill()
                pytest.fail(f"no checkpoint after {TIMEOUT} s:\n{cluster.log(0, 'first')[-3000:]}")
            time.sleep(0.1)
        cluster.processes[1].send_signal(signal.SIGKILL)  # worker 1 dies mid-run
        saved_before_the_kill = [epoch for epoch, _ in list_checkpoints(run_dir / "checkpoints")]
        assert saved_before_the_kill and saved_before_the_kill[-1] < EPOCHS
        # the chief finds its peer gone, stops and asks to be relaunched
        assert cluster.wait(0, "first") == EXIT_WORKER_LOST, cluster.log(0, "first")[-3000:]
        assert "a worker of the cluster was lost" in cluster.log(0, "first")

        cluster.start([command, command], "again")  # the same command on every worker, as a scheduler would
        for index in range(2):
            assert cluster.wait(index, "again") == 0, cluster.log(index, "again")[-3000:]
    log = cluster.log(0, "again")
    restored = int(log.split("restored ")[1].split("(epoch ")[1].split(")")[0])
    assert saved_before_the_kill[-1] <= restored < EPOCHS
    assert [epoch for epoch, _ in list_checkpoints(run_dir / "checkpoints")] == list(range(1, EPOCHS + 1))
    epochs_in_history = [line.split(",")[0] for line in (run_dir / "history.csv").read_text().splitlines()[1:]]
    assert epochs_in_history == [str(epoch) for epoch in range(EPOCHS)]
    # an exact resume: the interrupted two-worker run ends where one uninterrupted process does
    _, outputs, _ = one_process
    difference = _largest_difference(generator_outputs(*load_generators(run_dir).values()), outputs)
    assert difference <= OUTPUT_TOLERANCE, f"outputs, resumed two-worker run vs one process: {difference:.3g}"


def test_multiworker_without_tf_config_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    with pytest.raises(ConfigError, match="TF_CONFIG environment variable is not set"):
        run_training(resolve_config(cli_values=_overrides(tmp_path / "run")))
    monkeypatch.setenv("TF_CONFIG", '{"cluster": {"worker": ["127.0.0.1:1"]}, "task": {"type": "ps", "index": 0}}')
    with pytest.raises(ConfigError, match="task must name a type and an index"):
        run_training(resolve_config(cli_values=_overrides(tmp_path / "run")))
    monkeypatch.setenv("TF_CONFIG", "{not json")
    with pytest.raises(ConfigError, match="not valid JSON"):
        run_training(resolve_config(cli_values=_overrides(tmp_path / "run")))


def test_multiworker_refuses_float16_loss_scaling(tmp_path):
    overrides = _overrides(tmp_path / "run")
    overrides["train"]["mixed_precision"] = "mixed_float16"
    with pytest.raises(ConfigError, match="mixed_float16 is not supported with --distribute multiworker"):
        resolve_config(cli_values=overrides)



def test_workers_started_with_different_options_stop_with_an_error_instead_of_hanging(tmp_path):
    commands = []
    for index, epochs in enumerate((3, 2)):
        overrides = _overrides(tmp_path / "run")
        overrides["train"]["epochs"] = epochs
        (tmp_path / f"config{index}.json").write_text(json.dumps(overrides))
        commands.append([sys.executable, str(ROOT / "train.py"), "--config", str(tmp_path / f"config{index}.json")])
    with Cluster(_free_ports(2), tmp_path) as cluster:
        cluster.start(commands, "mismatch")
        for index in range(2):
            assert cluster.wait(index, "mismatch") == 2, cluster.log(index, "mismatch")[-3000:]
            assert "the workers disagree" in cluster.log(index, "mismatch")
            assert "epochs 3" in cluster.log(index, "mismatch") and "epochs 2" in cluster.log(index, "mismatch")
    assert not list_checkpoints(tmp_path / "run" / "checkpoints")


def test_the_chief_task_or_else_worker_0_writes_the_outputs():
    import tensorflow as tf

    from virtual_ihc.training.strategy import is_chief

    def strategy(cluster, task_type, task_id):
        resolver = tf.distribute.cluster_resolver.SimpleClusterResolver(
            tf.train.ClusterSpec(cluster), task_type=task_type, task_id=task_id)
        return type("FakeStrategy", (), {"cluster_resolver": resolver})()

    workers = {"worker": ["a:1", "b:1"]}
    assert is_chief(strategy(workers, "worker", 0)) and not is_chief(strategy(workers, "worker", 1))
    with_chief = {"chief": ["c:1"], **workers}
    assert is_chief(strategy(with_chief, "chief", 0)) and not is_chief(strategy(with_chief, "worker", 0))
    assert is_chief(tf.distribute.get_strategy())  # one process
