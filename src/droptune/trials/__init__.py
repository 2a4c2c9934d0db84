"""Trials: one lifecycle (open the run, report epochs, finish, tell) and the standard runner."""
