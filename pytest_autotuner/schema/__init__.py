"""The JSON Schema of tuning specs, generated from the pydantic models and shipped for editors."""
