"""Ahead-of-time compilation of the real train step for hardware this host does not have.

  targets.py         TPU slices (libtpu) and GPU hosts (XLA's compile-only client) as jax devices
  compile_report.py  the step lowered with abstract state and batch, compiled, memory and FLOPs read off
  hlo_groups.py      each collective's device groups read from the HLO: which ones cross nodes
  __main__.py        python -m synergen_jax.aot --config ... --topology v5p:4x4x4
"""
