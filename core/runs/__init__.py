"""Runs kept and driven: the SQLite store, the training run, worker processes and their manager, history."""
