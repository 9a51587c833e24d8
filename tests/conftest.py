"""Test setup: 8 fake CPU devices (SYNERGEN_TEST_CPU_DEVICES overrides; the Mosaic GPU interpreter
runs in a one-device child process), set before jax initialises its backends; and one persistent
compilation cache for the whole suite, inherited by the processes tests start (the same tiny train
step is compiled by many tests and subprocesses; a cache hit returns the same executable)."""

import os
import tempfile

CPU_DEVICES = int(os.environ.get("SYNERGEN_TEST_CPU_DEVICES", "8"))
os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                           f" --xla_force_host_platform_device_count={CPU_DEVICES}").strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR",
                      os.path.join(tempfile.gettempdir(), f"synergen_jax_tests_{os.getuid()}_jax_cache"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.5")

import numpy as np  # noqa: E402
import pytest  # noqa: E402


# The longest tests (over a minute each on 2 cores: clusters, fresh processes, the demo) start
# first: pytest-xdist hands out tests in collection order, and one of these drawn last would leave
# the other worker idle for its whole length.
SLOW_FIRST = (
    "tests/cluster/test_slurm.py::test_preempted_job_requeues_and_equals_an_uninterrupted_run",
    "tests/kernels/test_flash_mgpu.py::test_interpret_mode_checks_pass_in_a_fresh_process",
    "tests/parallel/test_multiprocess.py::test_a_process_frozen_longer_than_gloo_s_timeout_is_waited_for",
    "tests/cluster/test_tpu_pod.py::test_up_then_train_on_two_workers_equals_one_process",
    "tests/cluster/test_tpu_pod.py::test_run_recovers_from_capacity_preemption_and_suspension_by_itself",
    "tests/test_demo.py::test_demo_chains_stages_evaluates_and_resumes",
    "tests/parallel/test_failures.py::test_sigterm_to_one_of_two_processes_stops_both_at_one_step",
    "tests/test_sweep.py::test_sweep_runs_points_resumes_and_summarises",
)


def pytest_collection_modifyitems(config, items):
  rank = {node: i for i, node in enumerate(SLOW_FIRST)}
  items.sort(key=lambda item: rank.get(item.nodeid, len(rank)))   # stable: the rest keep their order


@pytest.fixture
def rng():
  return np.random.default_rng(0)


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory):
  """configs/tiny.py's image tokenizer trained on MNIST-5k and its prepared shards (built once)."""
  from helpers import tiny
  from synergen_jax.prepare.writer import prepare
  from synergen_jax.vq import training as vq_training
  from synergen_jax.vq.tokenizer import ImageTokenizer

  config, mc = tiny()
  root = tmp_path_factory.mktemp("tiny_data")
  report = vq_training.train(config, str(root / "vq"))
  tokenizer = ImageTokenizer.load(str(root / "vq"))
  meta = prepare(config, str(root / "prepared"), tokenizer)
  config.data.path = str(root / "prepared")
  return dict(config=config, mc=mc, vq_dir=str(root / "vq"), data_dir=str(root / "prepared"),
              meta=meta, vq_report=report, image_tokenizer=tokenizer)


@pytest.fixture(scope="session")
def tiny_workdir(tiny_data, tmp_path_factory):
  """A tiny model trained 60 steps (SFT) on tiny_data: what the inference tools load."""
  from synergen_jax.train.loop import train

  config = tiny_data["config"].copy_and_resolve_references()
  config.stage = "sft"
  config.train.update(steps=60, batch_size=8, log_every=30, checkpoint_every=60)
  config.optim.update(warmup_steps=5, learning_rate=3e-3)
  workdir = str(tmp_path_factory.mktemp("tiny_workdir"))
  train(config, workdir)
  return workdir


@pytest.fixture(scope="session")
def reference_losses(tiny_data, tmp_path_factory):
  """{step: loss} of configs/tiny.py trained 16 steps in one process on 8 devices with
  helpers.RUN_FLAGS: what every multi-process, preempted, resumed or simulated-cluster run of the
  same flags must reproduce step for step."""
  from helpers import run_config
  from synergen_jax.train.loop import train
  return train(run_config(tiny_data, 16), str(tmp_path_factory.mktemp("reference")))["losses"]


CLUSTER_BIN = os.path.join(os.path.dirname(os.path.abspath(__file__)), "cluster", "bin")


@pytest.fixture
def cluster(tmp_path):
  """The environment of a shell on a machine whose gcloud, sbatch, srun, scontrol, uv and
  curl are the fakes in tests/cluster/bin, with their state under tmp_path/cluster."""
  state = tmp_path / "cluster"
  state.mkdir()
  env = dict(os.environ, PATH=f"{CLUSTER_BIN}:{os.environ['PATH']}", FAKE_CLUSTER_DIR=str(state))
  env.pop("XLA_FLAGS", None)
  return dict(env=env, state=state)


@pytest.fixture(scope="session")
def gcs_emulator(tmp_path_factory):
  """A GCS emulator on loopback for the whole session (bench/gcs_emulator.py), found by every client
  (this process and the processes tests start) through STORAGE_EMULATOR_HOST alone, as a user would
  point them at one."""
  from bench.gcs_emulator import gcs_emulator as emulator
  with emulator(str(tmp_path_factory.mktemp("gcs") / "fake-gcs-server.log")) as url:
    yield url


@pytest.fixture
def gcs_bucket(gcs_emulator, request):
  """A new empty bucket on the emulator: `gs://<name>`."""
  import re
  from bench.gcs_emulator import make_bucket
  name = re.sub(r"[^a-z0-9]+", "-", request.node.name.lower())[:50].strip("-") + f"-{os.getpid()}"
  return make_bucket(gcs_emulator, name)
