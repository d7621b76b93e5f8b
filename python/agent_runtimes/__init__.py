"""Native agent runtimes for Python hosts.

Agent runtimes ship as native plugin libraries; this package finds, checks and loads them
(through the Rust ``runtime-loader``) and runs their turns from ``asyncio`` or blocking code::

    import asyncio, agent_runtimes

    runtimes = agent_runtimes.Runtimes(plugin_dirs=["./plugins"])
    print(asyncio.run(runtimes.run_turn("echo", "hello")).content)

See :class:`Runtimes`, :class:`Runtime`, :class:`TurnStream`, the typed values
(:class:`TurnRequest`, :class:`TurnOutput`, :class:`Delta`, :class:`Usage`) and the exceptions
(:class:`AgentRuntimeError` and one subclass per kind). Plugin and loader log events go to
``logging.getLogger("agent_runtimes")``; call :func:`refresh_log_level` after changing that
logger's level.
"""

from __future__ import annotations

from ._native import (
    CONTRACT_VERSION,
    Delta,
    DirReport,
    DiscoveryReport,
    Rejection,
    Runtime,
    RuntimeInfo,
    Runtimes,
    Shadowed,
    ToolCall,
    TurnOutput,
    TurnRequest,
    TurnStream,
    Usage,
    clean,
    install_log_bridge as _install_log_bridge,
    refresh_log_level,
)
from ._errors import (
    AgentRuntimeError,
    Authentication,
    Cancelled,
    Crashed,
    Failed,
    Internal,
    InvalidConfig,
    InvalidRequest,
    NotFound,
    Panicked,
    RateLimited,
    Rejected,
    ResolveError,
    Timeout,
    Unavailable,
    Unsupported,
    WorkerLost,
    error_class,
)

__version__ = "0.2.0"

__all__ = [
    "CONTRACT_VERSION",
    "Delta",
    "DirReport",
    "DiscoveryReport",
    "Rejection",
    "Runtime",
    "RuntimeInfo",
    "Runtimes",
    "Shadowed",
    "ToolCall",
    "TurnOutput",
    "TurnRequest",
    "TurnStream",
    "Usage",
    "clean",
    "refresh_log_level",
    "AgentRuntimeError",
    "Authentication",
    "Cancelled",
    "Crashed",
    "Failed",
    "Internal",
    "InvalidConfig",
    "InvalidRequest",
    "NotFound",
    "Panicked",
    "RateLimited",
    "Rejected",
    "ResolveError",
    "Timeout",
    "Unavailable",
    "Unsupported",
    "WorkerLost",
    "error_class",
]

# Loader and plugin `tracing` events into `logging` (once per process).
_install_log_bridge()

import atexit as _atexit

from ._native import _shutdown

# Let the bridge's threads deliver their last results before the interpreter is finalized.
_atexit.register(_shutdown)
