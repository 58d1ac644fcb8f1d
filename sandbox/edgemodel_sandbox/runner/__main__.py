"""Entry point for `python -m edgemodel_sandbox.runner` (how the sandbox starts the runner)."""

from __future__ import annotations

from edgemodel_sandbox.runner.main import main

if __name__ == "__main__":
    raise SystemExit(main())
