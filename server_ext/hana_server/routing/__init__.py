"""Task-complexity routing: the `auto` model name resolved to a tier's model (see router.py)."""
