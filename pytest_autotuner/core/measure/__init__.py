"""One trial's measurement and its score: the benchmark plan, metrics, the trial's deadline and failures,
scoring, the capacity ladder, precision, statistics, early stopping, formatting. Imports ``core.spec`` only."""
