"""Scaling-law toolkit: plan, run and fit isoFLOP sweeps the way the paper did (SPEC §5.4).

Modules: compute (C, C_min, B_crit, the paper's laws), shape (ShapeRule), grid (GridSpec),
plan (make_plan, Plan), run (run_sweep), results (the results file), fit (fit_scaling),
analyze (fit a results file), plots, tables, commands (the CLI). The package imports none of
them itself, so that `hunyuan` starts without loading the trainer.
"""
