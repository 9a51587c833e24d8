"""The paper config's train step at reduced depth on this host's first accelerator: step time and
MFU, beside the MFU the planner's roofline predicts for it at efficiency ceiling 1, in the JSON
that `python -m synergen_jax.plan --calibration FILE` reads (the measured / predicted ratio becomes
the device's ceiling). bench/device_check.sh runs it; alone:

  python bench/device_step.py --out step.json [--config configs/synergen_vl_2b.py:stage=1
      --layers 4 --rows 2 --steps 5 --attention pallas_mgpu] [--step_seconds S]

--step_seconds re-scores a time measured elsewhere without running anything (no accelerator
needed); --build_only checks that the reduced config builds on one device (shapes only).
--merge KEY=FILE (repeatable) adds other parts of the device check (kernel tests,
attention timings) under KEY.
"""

from __future__ import annotations

import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app, flags  # noqa: E402

flags.DEFINE_string("config", "configs/synergen_vl_2b.py:stage=1", "experiment config")
flags.DEFINE_integer("layers", 4, "LLM layers kept (the paper's 24 do not fit one GPU's time budget)")
flags.DEFINE_integer("rows", 2, "rows per step (one device)")
flags.DEFINE_integer("steps", 5, "timed steps after one compile step")
flags.DEFINE_string("attention", "pallas_mgpu", "attention implementation")
flags.DEFINE_float("step_seconds", None, "score this measured step time instead of running")
flags.DEFINE_multi_string("merge", [], "KEY=FILE: a part of the device check to include")
flags.DEFINE_string("out", "device_check.json", "where the JSON goes")
flags.DEFINE_boolean("build_only", False, "build the reduced step on the first device (shapes "
                     "only, no step run, no JSON): that the config is accepted there")
FLAGS = flags.FLAGS


def reduced_config():
  from synergen_jax.core.config import load_config
  config = load_config(FLAGS.config)
  with config.unlocked():
    config.model.update(num_layers=FLAGS.layers, attention_impl=FLAGS.attention)
    # One device holds every parameter: the replication guard, meant for meshes, would refuse it.
    config.train.update(batch_size=FLAGS.rows, grad_accum=1, max_replicated_fraction=1.0)
    config.mesh.update(data=1, fsdp=1, tensor=1, dcn_data=1, dcn_fsdp=1)
  return config


def predicted_mfu(config, device_kind: str) -> float:
  """The roofline's MFU for this step on one device of this kind at ceiling 1."""
  from synergen_jax.planning.facts import facts
  from synergen_jax.planning.layouts import Layout
  from synergen_jax.planning.roofline import step_time
  from synergen_jax.planning.targets import parse_target
  family = "h200" if "h200" in device_kind.lower() else "h100"
  target = parse_target(family)
  f = facts(config)
  layout = Layout(1, 1, 1, remat=config.model.remat_policy, attention=FLAGS.attention,
                  unfold_chunk=int(config.model.unfold_chunk))
  return step_time(f, layout, target, {target.family: 1.0}).mfu, f


def measure(config) -> tuple[float, str]:
  """Seconds per step of the real train step on the first device, and its device kind."""
  import flax.linen as nn
  import jax
  from synergen_jax.aot.compile_report import for_target
  from synergen_jax.data.synthetic import synthetic_batch
  from synergen_jax.parallel.mesh import make_mesh
  from synergen_jax.parallel.sharding import LOGICAL_RULES, batch_sharding
  from synergen_jax.train.state import build_train_step, init_state
  devices = jax.devices()[:1]
  mc = for_target(config, devices)
  mesh = make_mesh(config.mesh, devices)
  with jax.set_mesh(mesh), nn.logical_axis_rules(LOGICAL_RULES):
    plan = build_train_step(config, mc, mesh)
    if FLAGS.build_only:
      return 0.0, devices[0].device_kind
    state = jax.jit(lambda: init_state(plan.model, plan.tx, plan.example, 0),
                    out_shardings=plan.shardings)()
    batch = jax.device_put(dict(synthetic_batch(mc, FLAGS.rows, config.data.seq_len)),
                           batch_sharding(mesh))
    state, metrics = plan.step_fn(state, batch)            # compile
    jax.block_until_ready(metrics)
    t0 = time.perf_counter()
    for _ in range(FLAGS.steps):
      state, metrics = plan.step_fn(state, batch)
    jax.block_until_ready(metrics)
  return (time.perf_counter() - t0) / FLAGS.steps, devices[0].device_kind


def main(argv):
  del argv
  config = reduced_config()
  if FLAGS.step_seconds is not None:
    seconds, kind = FLAGS.step_seconds, "NVIDIA H100 80GB HBM3 (given)"
  else:
    seconds, kind = measure(config)
    if FLAGS.build_only:
      print(f"the reduced step builds on one {kind} device")
      return
  from synergen_jax.core.hardware import peak_flops
  from synergen_jax.planning.roofline import row_flops
  ceiling_1, f = predicted_mfu(config, kind)
  model_flops = 3 * row_flops(f, padded=False) * f.batch_size
  peak = peak_flops(kind)
  import jax
  report = dict(device_kind=kind, peak_flops=peak, jax_version=jax.__version__,
                date=time.strftime("%Y-%m-%d"),
                train_step=dict(config=FLAGS.config, layers=FLAGS.layers, rows=FLAGS.rows,
                                seq_len=f.seq_len, attention=FLAGS.attention,
                                step_seconds=seconds, model_flops=model_flops,
                                mfu=model_flops / seconds / peak if peak else None,
                                roofline_mfu_at_ceiling_1=ceiling_1))
  for item in FLAGS.merge:
    key, _, path = item.partition("=")
    try:
      with open(path) as part:
        text = part.read()
      report[key] = json.loads(text) if path.endswith(".json") else text[-4000:]
    except (OSError, json.JSONDecodeError) as e:
      report[key] = f"missing: {e}"
  with open(FLAGS.out, "w") as out:
    json.dump(report, out, indent=1)
  print(json.dumps(report["train_step"], indent=1))


if __name__ == "__main__":
  app.run(main)
