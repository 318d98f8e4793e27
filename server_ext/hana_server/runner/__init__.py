"""The runner process (`python -m hana_server.runner`): one model, one llama context, one engine
thread doing continuous batching, HTTP endpoints on 127.0.0.1 guarded by a secret header.

Importing this package must stay cheap: llama_cpp is imported by the loader thread only.
"""
