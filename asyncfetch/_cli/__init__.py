"""The command line: ``asyncfetch get|batch|mirrors|cache|serve``."""
