"""The main job: train the supernet, evaluate subnets zero-shot, search the Pareto front, report, export.

`run.run_main_job` is what `python -m effjax.main` calls; `subnet_search` evaluates and searches
configurations of a trained supernet; `report` writes report.md; `export` is the export CLI
(`python -m effjax.job.export`).
"""
