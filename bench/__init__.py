"""Benchmarks: large seeded data sets on PostgreSQL, the project beside baselines.

`python -m bench [workload ...]` runs every module in `bench/workloads/` (or
the named ones) and prints one line per workload:

    bench <name>: project <s> s, <baseline> <s> s, ratio <project/baseline>[, extras]
"""
