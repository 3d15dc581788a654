"""The task format: a tuning spec (``task_spec`` from its sections: ``optimization``, ``benchmark_settings``,
``runtime_settings``, on ``spec_model``; its text: ``spec_text``), its traffic (``scenarios``, ``dataset``,
``tokens``), the models and objectives it names, SGLang's argument tables and the capacity ladder's limits.
Imports nothing else of the core."""
