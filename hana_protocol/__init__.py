"""The neutral layer: what the kernel side, the server side and the CLI all speak.

Host addresses, durations, errors, the option table, the Modelfile and its translation into a
create request, digests and display formatting. It imports neither `hana_server` nor
`hana_jupyter`, and nothing heavier than the standard library, so `hana ps` and a kernel's
`%load_ext hana_jupyter` stay fast.
"""
