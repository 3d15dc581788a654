"""pytest-autotuner: tune SGLang server flags with Optuna and guard them in CI."""

__version__ = "0.1.0"
