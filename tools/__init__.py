"""Developer tools run from a checkout (``python tools/evaluate.py ...``)."""
