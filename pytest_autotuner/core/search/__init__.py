"""What to try next: the space, the samplers and the Optuna study, GPUs and memory rules, SGLang's defaults,
the simulator screen and its calibration. Imports ``core.spec`` and ``core.measure``."""
