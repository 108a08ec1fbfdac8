"""The speed benchmark's pieces; ``benchmarks/bench.py`` is the command that runs them.

workload   data, models, masks and the FLOP count every row is charged with
timing     median of repeats, waiting for CUDA
limits     the dense matmul limit (a) and which measurement of it counts
trainers   the plain loop (b) and ticketlab's single-model (c) and K-model (d) trainers
processes  two one-thread processes run together: (e), (c2), (d2)
scoring    SNIP, GraSP and SynFlow scoring times (f)
layouts    the layout a sweep would choose here and the rows behind it (g)
imp        the 3-seed IMP job, short, with its per-level phases, extrapolated to 20 epochs per level (h)
run        one benchmark run: the table, the interleaved rounds, the report
compare    the ratios between rows, and the speed issues' goals for them
report     markdown and the files written
"""
