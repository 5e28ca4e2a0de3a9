"""Command-line entry points: ``python -m experiments.<prepare|train|evaluate|predict|explain|sweep>``."""
