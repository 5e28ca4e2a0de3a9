"""Command-line entry points: ``python -m experiments.<name>`` (prepare, train, evaluate,
predict, explain, sweep)."""
