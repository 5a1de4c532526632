"""The limits every sandbox process runs under, and the user it runs as, resolved once from Settings."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from pipeline.scoring.sandbox.environment import parse_allow_list

if TYPE_CHECKING:
    from pipeline.settings import Settings


@dataclass(frozen=True)
class SandboxLimits:
    """`timeout_s` is per job (the parent kills the process group); `cpu_s` and `memory_mb` are
    per sandbox process (RLIMIT_CPU, RLIMIT_AS set in the child before the scorer is imported).
    A long-lived process is replaced once it has used half of `cpu_s`, so healthy scorers never
    reach it."""

    timeout_s: float = 20.0
    cpu_s: int = 300
    memory_mb: int = 2048
    concurrency: int = 4
    start_timeout_s: float = 60.0
    install_timeout_s: float = 600.0
    env_allow: tuple[str, ...] = ()
    uid: int | None = None  # a root worker runs scorers as this user; None: evalstream-sandbox (isolation.py)
    gid: int | None = None
    require_isolation: bool = False  # no scorer runs when the kernel refuses a part of the isolation

    @classmethod
    def from_settings(cls, settings: Settings) -> SandboxLimits:
        # The runner gives up on a job after scorer_timeout_s; the sandbox must not outlive that.
        return cls(
            timeout_s=min(settings.sandbox_timeout_s, settings.scorer_timeout_s),
            cpu_s=settings.sandbox_cpu_s,
            memory_mb=settings.sandbox_memory_mb,
            concurrency=settings.sandbox_concurrency,
            start_timeout_s=settings.sandbox_start_timeout_s,
            install_timeout_s=settings.sandbox_install_timeout_s,
            env_allow=parse_allow_list(settings.sandbox_env_allow),
            uid=settings.sandbox_uid,
            gid=settings.sandbox_gid,
            require_isolation=settings.sandbox_require_isolation,
        )

    @property
    def recycle_cpu_s(self) -> float:
        return self.cpu_s / 2
