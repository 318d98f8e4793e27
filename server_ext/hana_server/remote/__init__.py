"""Remote models: served by another Ollama/hana host or by an OpenAI-compatible engine."""
