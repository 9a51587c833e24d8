"""Compile the real train step for a TPU topology or GPU hosts on a CPU host and say whether it fits.

  pip install -e ".[tpu]"     # libtpu: TPU device descriptions and the TPU compiler, no TPU needed
  python -m synergen_jax.aot --config configs/synergen_vl_2b.py --topology v5p:4x4x4 \
      [--mesh data=1,fsdp=-1,tensor=1] [--config.train.batch_size=...] [--hbm_gb 95]
  pip install -e ".[cuda]"    # jax's CUDA plugin: XLA's compile-only GPU client (its own venv)
  python -m synergen_jax.aot --config configs/qwen2_0p5b_ablation.py --topology h100:1x8

`jax.experimental.topologies.get_topology_desc` describes the slice's chips; the mesh is built from
them exactly as the trainer builds it from real devices, and `build_train_step` (the trainer's own
step) is lowered with abstract state and batch and compiled by libtpu (for GPU targets: by XLA's GPU
compiler, through ptxas). Printed per device: parameters, optimizer state, the batch, XLA's temporary
buffers (activations, gradients, collectives) and the total against the chip's HBM; plus model FLOPs per step (framework count, MFU convention) and
XLA's own FLOP count. Exits 1 when the step does not fit (when the TPU compiler itself refuses, its
temporaries figure and available HBM are reported).
"""

from __future__ import annotations

import os

# Nothing runs on an accelerator here: the local platform is the CPU, and the CUDA plugin (which
# otherwise checks for CUDA libraries such as cuPTI that a CPU host lacks) only describes targets.
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import dataclasses
import json
import sys

from absl import app, flags, logging

from synergen_jax.core import cli
from synergen_jax.aot.compile_report import compile_report, format_report, parse_mesh
from synergen_jax.aot.targets import tpu_topology_of

FLAGS = flags.FLAGS
cli.define_config_flag()
flags.DEFINE_string("topology", None, "TPU slice (v5p:4x4x4, v4:2x2x2, v5e:4x4) or GPU target "
                    "GPU[:HOSTSxDEVICES] (h100, h100:1x8, h200:2x8)")
flags.DEFINE_string("accelerator_type", None, "instead of --topology: a gcloud TPU accelerator type "
                    "(v5p-128, v5litepod-64, v6e-256, v4-32), compiled for its default chip grid")
flags.DEFINE_string("mesh", None, "mesh override of data, fsdp, tensor and (several GPU hosts or TPU "
                    "slices) dcn_data, dcn_fsdp, e.g. data=1,fsdp=-1,tensor=1")
flags.DEFINE_float("hbm_gb", None, "HBM per chip in GiB (default: from the device kind)")
flags.DEFINE_string("json", None, "also write the report as JSON here")
flags.DEFINE_string("hlo", None, "also write the compiled program's HLO text here")


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)
  config = FLAGS.config
  with config.unlocked():
    parse_mesh(FLAGS.mesh, config)
  if bool(FLAGS.topology) == bool(FLAGS.accelerator_type):
    raise app.UsageError("give one of --topology (v5p:4x4x4, h100:1x8) or --accelerator_type (v5p-128)")
  topology = FLAGS.topology or tpu_topology_of(FLAGS.accelerator_type)
  report = compile_report(config, topology, FLAGS.hbm_gb, hlo_path=FLAGS.hlo)
  print(format_report(report))
  if FLAGS.json:
    with open(FLAGS.json, "w") as f:
      json.dump(dict(dataclasses.asdict(report), fits=report.fits), f, indent=1)
  sys.exit(0 if report.fits else 1)


if __name__ == "__main__":
  flags.mark_flags_as_required(["config"])
  app.run(main)
