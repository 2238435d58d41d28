"""Sweeps: a grid of seeded runs planned from the method scripts, packed, launched and followed.

grid     the grid (YAML file and options), checked before anything runs
plan     units (one seed of one script call) with their train.py commands, cost estimates, packing
cost     image-tower passes a list of train.py commands needs (tools/plan_grid.py)
state    one plan file per submission, the sweep's own records, and each unit's state through
         engine.runs (finished / stale / failed / running / pending)
encode   the feature-encoding job: data, backbone and feature cache only
launch   running units: a pool of local workers, or submitit (SLURM, or its local executor)

tools/sweep.py and tools/plan_grid.py are the command lines over these modules.
"""
