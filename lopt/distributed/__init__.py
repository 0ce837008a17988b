"""Scale-out of meta-training: a learner and Ray worker actors, and JAX sharding of the population.

    lopt meta-train --ray auto --workers 4 ...          # the CLI (MetaTrainConfig.ray / workers / staleness)
    from lopt.distributed.learner import meta_train_distributed   # the same from Python (imports Ray)
    from lopt.distributed.sharding import particle_mesh, sharded_step   # many devices (no Ray)

Modules, one idea each: `core` (the two halves of an outer step, pure JAX), `wire` (what crosses
processes), `worker` (the actor's body), `pool` (the learner's side of the workers: protocol,
staleness, faults), `validation` (the validation actor), `learner` (the loop), `cluster`
(importing Ray, joining or starting a cluster), `sharding` (the particle axis across devices),
`scaling` (the throughput model of docs/scaling.md).
Importing this package, `core`, `wire` or `sharding` does not import Ray.
"""
