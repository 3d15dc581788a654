"""A tuning session and what it decides: the session, run_task and its TaskOutcome, the verdict, baselines,
trends, the Pareto front. Imports the other three packages of the core."""
