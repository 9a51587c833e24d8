"""Launch scripts: --dry-run prints exactly the commands a real launch would run."""

import os
import subprocess

from helpers import ROOT


def _run(args, **env):
  return subprocess.run(["bash", *args], cwd=ROOT, capture_output=True, text=True,
                        env=dict(os.environ, **env))


def test_tpu_pod_dry_run():
  base = dict(SHIP_DIRTY="1", SKIP_PREFLIGHT="1")
  up = _run(["launch/tpu_pod.sh", "--dry-run", "up"], TPU_NAME="pod1", ZONE="us-east5-a",
            ACCELERATOR_TYPE="v5p-64", PROJECT="proj", SPOT="0", **base)
  assert up.returncode == 0, up.stderr
  lines = up.stdout.splitlines()
  assert lines[0] == ("+ gcloud compute tpus tpu-vm create pod1 --accelerator-type v5p-64 --version "
                      "v2-alpha-tpuv5 --zone us-east5-a --project proj")          # SPOT=0: on demand
  assert any("scp" in l and "--worker=all" in l for l in lines)
  assert any("ssh pod1 --worker=all" in l and "uv\\ venv" in l and "--python\\ 3.11" in l for l in lines)
  # One runtime per generation; spot and reserved capacity through queued resources.
  for accelerator, runtime, capacity in (("v5litepod-64", "v2-alpha-tpuv5-lite", dict(SPOT="1")),
                                         ("v6e-16", "v2-alpha-tpuv6e", dict(CAPACITY="reserved")),
                                         ("v4-32", "tpu-ubuntu2204-base", dict(SPOT="1"))):
    r = _run(["launch/tpu_pod.sh", "--dry-run", "up"], ACCELERATOR_TYPE=accelerator, **capacity, **base)
    first = r.stdout.splitlines()[0]
    assert first.startswith("+ gcloud compute tpus queued-resources create synergen --node-id synergen")
    assert f"--runtime-version {runtime}" in first and ("--reserved" if "CAPACITY" in capacity else "--spot") in first
  bad = _run(["launch/tpu_pod.sh", "--dry-run", "up"], ACCELERATOR_TYPE="v9-8", **base)
  assert bad.returncode == 2 and "RUNTIME_VERSION" in bad.stderr

  train = _run(["launch/tpu_pod.sh", "--dry-run", "train", "--", "--config.train.steps=7"],
               TPU_NAME="pod1", WORKDIR="gs://bucket/run 1", CONFIG="configs/tiny.py:fold=2x4",
               DATA="gs://bucket/prepared")
  assert train.returncode == 0, train.stderr
  first, second = train.stdout.splitlines()
  plain = first.replace("\\", "")
  assert "ssh pod1 --worker=all" in first and "synergen_jax.train --config configs/tiny.py:fold=2x4" in plain
  assert "gs://bucket/run 1" in plain and "--config.train.steps=7" in first
  assert "--config.data.path=gs://bucket/prepared" in plain and "gcsfuse" not in plain   # read directly
  assert "setsid" in plain and "</dev/null" in plain and "agent-worker-number" in plain
  assert "--worker=0" in second and "tail --pid" in second.replace("\\", "")

  missing = _run(["launch/tpu_pod.sh", "--dry-run", "train"], WORKDIR="")
  assert missing.returncode == 2 and "set WORKDIR" in missing.stderr
  bad = _run(["launch/tpu_pod.sh", "--dry-run", "launch"])
  assert bad.returncode == 2 and "usage" in bad.stderr
  stop = _run(["launch/tpu_pod.sh", "--dry-run", "stop"], TPU_NAME="pod1")
  assert "--worker=all" in stop.stdout and "kill\\ -TERM" in stop.stdout
  logs = _run(["launch/tpu_pod.sh", "--dry-run", "logs", "3"], TPU_NAME="pod1")
  assert "--worker=3" in logs.stdout
  prepare = _run(["launch/tpu_pod.sh", "--dry-run", "prepare", "--", "--workers=4"], PREPARE_OUT="gs://b/laion",
                 CONFIG="my.py")
  plain = prepare.stdout.replace("\\", "")
  assert "--worker=all" in plain and "--out gs://b/laion" in plain and "agent-worker-number" in plain
  assert "python -m synergen_jax.prepare --config my.py --out gs://b/laion --workers=4" in plain


def test_gpu_single_host_dry_run():
  r = _run(["launch/gpu_single_host.sh", "--dry-run", "configs/tiny.py", "/tmp/w", "--config.mesh.fsdp=-1"],
           MEM_FRACTION="0.8", CUDA_VISIBLE_DEVICES="0,1")
  assert r.returncode == 0, r.stderr
  env_line, cmd = r.stdout.splitlines()
  assert "XLA_PYTHON_CLIENT_MEM_FRACTION=0.8" in env_line and "latency_hiding" in env_line
  assert "CUDA_VISIBLE_DEVICES=0,1" in env_line
  assert cmd == "+ python -m synergen_jax.train --config configs/tiny.py --workdir /tmp/w --config.mesh.fsdp=-1"
  assert _run(["launch/gpu_single_host.sh", "--dry-run", "only_one"]).returncode == 2


def test_slurm_dry_run_prints_the_batch_script():
  r = _run(["launch/slurm_gpu.sh", "--dry-run", "configs/tiny.py", "/shared/run", "--config.train.steps=5",
            "--config.train.batch_size=32"], NODES="4", GPUS_PER_NODE="8", PARTITION="a100", VENV="/opt/venv")
  assert r.returncode == 0, r.stderr
  out = r.stdout
  # The plan of the job's own layout comes first: its memory per GPU, time and cost.
  assert out.index("h100:4x8: 32 x H100") < out.index("#SBATCH --nodes=4") and " fits " in out
  for line in ("#SBATCH --nodes=4", "#SBATCH --ntasks-per-node=1", "#SBATCH --gpus-per-node=8",
               "#SBATCH --cpus-per-task=64", "#SBATCH --requeue", "#SBATCH --signal=TERM@300",
               "#SBATCH --partition=a100", "source /opt/venv/bin/activate",
               "export SYNERGEN_DISTRIBUTED=1 JAX_LOCAL_DEVICE_IDS=0,1,2,3,4,5,6,7",
               "srun --kill-on-bad-exit=1 --cpus-per-task=64",
               "python -m synergen_jax.train --config configs/tiny.py --workdir /shared/run --config.train.steps=5",
               f"+ sbatch {ROOT}/slurm_logs/synergen.sbatch"):
    assert line in out, line
  assert "--account" not in out
  assert not os.path.exists(os.path.join(ROOT, "slurm_logs"))      # a dry run writes nothing
  bad = _run(["launch/slurm_gpu.sh", "--dry-run", "c", "w"], NODES="two")
  assert bad.returncode == 2 and "NODES=two must be a positive integer" in bad.stderr
  # A batch of 8 rows cannot split over 32 GPUs: refused before anything is submitted.
  refused = _run(["launch/slurm_gpu.sh", "--dry-run", "configs/tiny.py", "/shared/run"], NODES="4")
  assert refused.returncode == 1 and "nothing was submitted" in refused.stderr
  assert "#SBATCH" not in refused.stdout


def test_local_multiprocess_dry_run():
  r = _run(["launch/local_multiprocess.sh", "--dry-run", "3", "python", "-c", "print(1)"], PORT="23456")
  assert r.returncode == 0, r.stderr
  lines = r.stdout.splitlines()
  assert len(lines) == 3
  for i, line in enumerate(lines):
    assert line.startswith(f"+ SYNERGEN_PROCESS_ID={i} SYNERGEN_NUM_PROCESSES=3 "
                           "SYNERGEN_COORDINATOR=localhost:23456 python -c")
  assert _run(["launch/local_multiprocess.sh", "zero", "true"]).returncode == 2


def test_local_multiprocess_returns_the_first_failure(tmp_path):
  code = "import os, sys; sys.exit(3 if os.environ['SYNERGEN_PROCESS_ID'] == '1' else 0)"
  r = _run(["launch/local_multiprocess.sh", "2", "python", "-c", code], LOG_DIR=str(tmp_path))
  assert r.returncode == 3
  ok = _run(["launch/local_multiprocess.sh", "2", "python", "-c", "import os; print(os.environ['SYNERGEN_NUM_PROCESSES'])"],
            LOG_DIR=str(tmp_path))
  assert ok.returncode == 0 and ok.stdout.strip().endswith("2")
  assert open(tmp_path / "process_1.log").read().strip() == "2"
