"""hana_server: an Ollama-compatible model server for the notebook machine (server side of hana)."""

from __future__ import annotations

__version__ = "0.1.0"
