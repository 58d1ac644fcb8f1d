"""The `edgemodel` command line: one entry point dispatching to runtime, operator and sandbox."""
