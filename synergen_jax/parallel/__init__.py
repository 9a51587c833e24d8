"""Many devices and many processes.

  mesh.py         the device mesh from config.mesh (data, fsdp, tensor; -1 = the rest)
  sharding.py     the logical-axis rules table; parameter and batch shardings; per_batch_shard (a
                  function on each device's rows, parameters gathered as FSDP does)
  distributed.py  jax.distributed.initialize from SYNERGEN_* or the cluster's environment
  failure.py      exit statuses, the failure watchdog, the preemption notice, the fault drill
"""
