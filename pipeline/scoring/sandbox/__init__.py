"""Run uploaded scorers in separate processes: a venv per requirements set, a scrubbed
environment, resource limits, a wall clock, and JSON lines over stdin/stdout.

`SandboxPool` (pool.py) is what the worker uses; `SandboxedScorer` (scorer.py) makes an uploaded
scorer a plain `Scorer` for the runner. `child.py` is the process on the other side.
"""

from pipeline.scoring.sandbox.errors import (
    SandboxCPUError,
    SandboxError,
    SandboxExitError,
    SandboxInterruptedError,
    SandboxMemoryError,
    SandboxSetupError,
    SandboxTimeoutError,
    UploadedScorerError,
    UploadedScorerRetryableError,
)
from pipeline.scoring.sandbox.limits import SandboxLimits

__all__ = [
    "SandboxCPUError",
    "SandboxError",
    "SandboxExitError",
    "SandboxInterruptedError",
    "SandboxLimits",
    "SandboxMemoryError",
    "SandboxSetupError",
    "SandboxTimeoutError",
    "UploadedScorerError",
    "UploadedScorerRetryableError",
]
