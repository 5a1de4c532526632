"""What can go wrong with an uploaded scorer's sandbox. Each becomes an error row, never a crash.

    ScorerError
    └── SandboxError                  the sandbox of an uploaded scorer failed
        ├── SandboxSetupError         its venv, pip install or module import failed
        ├── SandboxTimeoutError       killed after the wall-clock limit
        ├── SandboxMemoryError        exceeded the memory (address space) limit
        ├── SandboxCPUError           exceeded the CPU-seconds limit
        ├── SandboxExitError          the process exited or was killed while running the job
        ├── UploadedScorerError       the uploaded scorer raised (message: its type, text and frames)
        │   └── UploadedScorerRetryableError   it raised RetryableScorerError: the runner retries
        └── SandboxInterruptedError   killed because another job in the same process hung: retried
"""

from __future__ import annotations

from pipeline.errors import RetryableScorerError, ScorerError


class SandboxError(ScorerError):
    pass


class SandboxSetupError(SandboxError):
    pass


class SandboxTimeoutError(SandboxError):
    pass


class SandboxMemoryError(SandboxError):
    pass


class SandboxCPUError(SandboxError):
    pass


class SandboxExitError(SandboxError):
    pass


class UploadedScorerError(SandboxError):
    pass


class UploadedScorerRetryableError(UploadedScorerError, RetryableScorerError):
    pass


class SandboxInterruptedError(SandboxError, RetryableScorerError):
    pass
