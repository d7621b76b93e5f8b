"""The exceptions of ``agent_runtimes``: one class per error kind of a runtime.

Every exception a turn raises is an :class:`AgentRuntimeError` (itself a ``RuntimeError``)
with the runtime's ``kind``, ``message``, ``retriable`` flag and ``metadata``; the class says
the kind (``Timeout``, ``Cancelled``...), so ``except agent_runtimes.Timeout`` works. Kinds a
newer runtime invents arrive as :class:`AgentRuntimeError` with their own ``kind``.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Type

__all__ = [
    "AgentRuntimeError",
    "InvalidRequest",
    "Unsupported",
    "Unavailable",
    "Timeout",
    "Cancelled",
    "Panicked",
    "Internal",
    "InvalidConfig",
    "Authentication",
    "RateLimited",
    "Crashed",
    "WorkerLost",
    "ResolveError",
    "NotFound",
    "Rejected",
    "Failed",
    "error_class",
]


class AgentRuntimeError(RuntimeError):
    """An error of a runtime or of the loader.

    Attributes:
        kind: the error's kind as the runtime names it (``"timeout"``, ``"unsupported"``...).
        message: what happened.
        retriable: whether trying the same turn again may succeed.
        metadata: the runtime's structured extras (JSON-like), or ``None``.
    """

    kind: str = "internal"

    def __init__(
        self,
        message: str,
        *,
        kind: Optional[str] = None,
        retriable: bool = False,
        metadata: Any = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        if kind is not None:
            self.kind = kind
        self.retriable = retriable
        self.metadata = metadata

    def __str__(self) -> str:
        return f"{self.kind}: {self.message}"


class InvalidRequest(AgentRuntimeError, ValueError):
    """The request is malformed (kind ``invalid_request``)."""

    kind = "invalid_request"


class Unsupported(AgentRuntimeError):
    """The runtime does not declare what was asked (tools, streaming, MCP...) (kind ``unsupported``)."""

    kind = "unsupported"


class Unavailable(AgentRuntimeError):
    """The runtime or its backend cannot serve now (kind ``unavailable``, retriable)."""

    kind = "unavailable"


class Timeout(AgentRuntimeError, TimeoutError):
    """The turn took longer than its timeout (kind ``timeout``, retriable)."""

    kind = "timeout"


class Cancelled(AgentRuntimeError):
    """The turn was cancelled (kind ``cancelled``)."""

    kind = "cancelled"


class Panicked(AgentRuntimeError):
    """Plugin code panicked; the loader caught it (kind ``panicked``)."""

    kind = "panicked"


class Internal(AgentRuntimeError):
    """A bug in the runtime or the loader (kind ``internal``)."""

    kind = "internal"


class InvalidConfig(AgentRuntimeError, ValueError):
    """The runtime's configuration was refused (kind ``invalid_config``)."""

    kind = "invalid_config"


class Authentication(AgentRuntimeError):
    """The backend refused the credentials (kind ``authentication``)."""

    kind = "authentication"


class RateLimited(AgentRuntimeError):
    """The backend asked to slow down (kind ``rate_limited``, retriable)."""

    kind = "rate_limited"


class Crashed(AgentRuntimeError):
    """At the process level: the worker running the turn died (kind ``crashed``, retriable)."""

    kind = "crashed"


class WorkerLost(AgentRuntimeError):
    """A remote worker stopped answering (kind ``worker_lost``, retriable)."""

    kind = "worker_lost"


class ResolveError(AgentRuntimeError, LookupError):
    """No runtime could be resolved under a name. Resolution fails closed: nothing is guessed.

    Attributes:
        name: the name asked for.
        suggestion: the closest id or alias, or ``None`` (``NotFound`` only).
        available: the ids that can be resolved (``NotFound`` only).
    """

    def __init__(
        self,
        message: str,
        *,
        name: str = "",
        suggestion: Optional[str] = None,
        available: Optional[List[str]] = None,
    ) -> None:
        super().__init__(message, kind=self.kind)
        self.name = name
        self.suggestion = suggestion
        self.available = list(available or [])

    def __str__(self) -> str:
        return self.message


class NotFound(ResolveError):
    """No runtime or alias has this name (kind ``not_found``); the message suggests the closest."""

    kind = "not_found"


class Rejected(ResolveError):
    """The plugin declaring this name was refused at discovery or load (kind ``rejected``)."""

    kind = "rejected"


class Failed(ResolveError):
    """At the process level: the runtime's workers crashed too often (kind ``failed``)."""

    kind = "failed"


_BY_KIND: Dict[str, Type[AgentRuntimeError]] = {
    cls.kind: cls
    for cls in (
        InvalidRequest,
        Unsupported,
        Unavailable,
        Timeout,
        Cancelled,
        Panicked,
        Internal,
        InvalidConfig,
        Authentication,
        RateLimited,
        Crashed,
        WorkerLost,
    )
}

_RESOLVE: Dict[str, Type[ResolveError]] = {
    "not_found": NotFound,
    "rejected": Rejected,
    "failed": Failed,
}


def error_class(kind: str) -> Type[AgentRuntimeError]:
    """The exception class of an error kind (``AgentRuntimeError`` for an unknown kind)."""
    return _BY_KIND.get(kind, AgentRuntimeError)


def _from_native(kind: str, message: str, retriable: bool, metadata: Any) -> AgentRuntimeError:
    # Called by the native module to build the exception of a runtime's error.
    return error_class(kind)(message, kind=kind, retriable=retriable, metadata=metadata)


def _resolve_error(
    kind: str,
    message: str,
    name: str,
    suggestion: Optional[str],
    available: List[str],
) -> ResolveError:
    # Called by the native module when `resolve` fails.
    return _RESOLVE[kind](message, name=name, suggestion=suggestion, available=available)
