"""The pure core: what a tuning session decides, with no file, socket, process or signal of its own (the edges
read and write; ``tests/unit/test_import_rules.py`` keeps it so). Four packages, each importing only those
before it:

- ``spec``: the task format (``task_spec``: TaskSpec and its validation), the traffic grammar (``scenarios``,
  ``dataset``), tokens and model profiles, the objective table, SGLang's argument tables, the capacity
  ladder's limits.
- ``measure``: what one trial measures and how it is scored: the benchmark plan, metrics, the trial's deadline
  and failures, scoring, the capacity ladder, precision, statistics, early stopping, formatting.
- ``search``: the space, the samplers and the Optuna study, GPUs and memory rules, SGLang's defaults, the
  simulator screen and its calibration.
- ``outcome``: the session (ask, evaluate, tell; confirmation), run_task and its frozen TaskOutcome, the
  verdict, baselines, trends, the Pareto front.

A session is driven by an injected ``evaluate(params, deadline)`` and returns a frozen outcome. The edges
(``runtimes``, ``bench``, ``report``, ``sim`` and the ``plugin``) import from here; nothing here imports from
them.
"""
