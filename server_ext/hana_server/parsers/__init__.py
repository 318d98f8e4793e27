"""Parsers of generated text: thinking separated from content, tool calls found in it.

Pure and incremental: each parser is fed the runner's text piece by piece and answers what can be
shown so far, holding back only what may still turn out to be a tag. Nothing here does I/O or
imports the rest of the server, and every step costs time linear in its input, whatever the model
writes (tags never closed, JSON nested without end)."""
