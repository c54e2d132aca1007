"""Adapter in progress: no task is registered yet."""

TASKS: tuple = ()
