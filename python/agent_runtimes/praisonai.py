"""Native runtimes inside PraisonAI's runtime registry.

:func:`register` puts every runtime a :class:`~agent_runtimes.Runtimes` registry discovered
(and each alias) into ``praisonaiagents.runtime.registry`` as a factory of
:class:`NativeRuntime`, an implementation of PraisonAI's ``AgentRuntimeProtocol``, so code
written for PraisonAI runs a native runtime unchanged::

    from praisonaiagents.runtime.registry import resolve_runtime
    import agent_runtimes, agent_runtimes.praisonai

    agent_runtimes.praisonai.register(agent_runtimes.Runtimes(plugin_dirs=["./plugins"]))
    result = await resolve_runtime("echo").run_turn("hello")   # a RuntimeResult

Any registry that takes a factory works the same way: register
``functools.partial(NativeRuntime, runtimes, runtime_id)`` under each id of
``runtimes.list()`` (and each alias). ``praisonaiagents`` is imported only when these
functions run; this module imports without it.
"""

from __future__ import annotations

import functools
import time
from typing import Any, AsyncIterator, Dict, List, Optional

from . import Runtimes, TurnRequest

__all__ = ["NativeRuntime", "register", "unregister"]

# Capabilities of ours and the fields of PraisonAI's RuntimeCapabilityMatrix they set.
_CAPABILITY_FIELDS = {
    "streaming": ["streaming_deltas"],
    "tools": ["simple_tools", "tool_loop"],
    "mcp": ["mcp_tools"],
}


class NativeRuntime:
    """One native runtime as PraisonAI's ``AgentRuntimeProtocol``.

    Args:
        runtimes: the registry the runtime was discovered in.
        runtime_id: its id or alias (resolved now: an unknown name raises ``NotFound``).
        config: a configuration for a fresh instance (``Runtimes.new_instance``); ``None``
            shares the registry's instance.
        timeout: a turn timeout in seconds, or ``None``.
    """

    def __init__(
        self,
        runtimes: Runtimes,
        runtime_id: str,
        config: Optional[Dict[str, Any]] = None,
        timeout: Optional[float] = None,
    ) -> None:
        self._runtimes = runtimes
        if config is None:
            self._runtime = runtimes.resolve(runtime_id, timeout=timeout)
        else:
            self._runtime = runtimes.new_instance(runtime_id, config, timeout=timeout)
        self.runtime_id = self._runtime.id
        info = runtimes.info(self.runtime_id)
        self._version = info.version if info is not None else ""

    @property
    def runtime_name(self) -> str:
        """The native runtime's id."""
        return self.runtime_id

    @property
    def runtime_version(self) -> str:
        """The plugin's version."""
        return self._version

    @property
    def native(self):  # -> agent_runtimes.Runtime
        """The underlying :class:`agent_runtimes.Runtime`."""
        return self._runtime

    def capabilities(self) -> Any:
        """PraisonAI's ``RuntimeCapabilityMatrix`` of the runtime's declared capabilities."""
        from praisonaiagents.runtime.capabilities import RuntimeCapabilityMatrix

        fields = {"basic_chat": True, "async_execution": True}
        for name in self._runtime.capabilities:
            for field in _CAPABILITY_FIELDS.get(name, []):
                fields[field] = True
        return RuntimeCapabilityMatrix(
            **fields,
            metadata={"native_capabilities": list(self._runtime.capabilities),
                      "isolation": self._runtime.isolation},
        )

    def supports(self, model_ref: Optional[str] = None) -> bool:
        """Whether the runtime serves ``model_ref`` (any model when ``None``)."""
        if model_ref is None:
            return True
        return self._runtime.supports(model_ref)

    @staticmethod
    def _request(prompt: str, system_prompt: Optional[str], model_ref: Optional[str],
                 kwargs: Dict[str, Any]) -> TurnRequest:
        return TurnRequest(
            prompt,
            system=system_prompt,
            model=model_ref,
            history=kwargs.get("history"),
            max_tokens=kwargs.get("max_tokens"),
            temperature=kwargs.get("temperature"),
            stop=kwargs.get("stop"),
            config=kwargs.get("config"),
            metadata=kwargs.get("metadata"),
            tools=kwargs.get("tool_definitions"),
        )

    @staticmethod
    def _result(output: Any) -> Any:
        from praisonaiagents.runtime.protocols import RuntimeResult

        usage = output.usage
        return RuntimeResult(
            content=output.content,
            metadata={
                "finish_reason": output.finish_reason,
                "usage": {
                    "input_tokens": usage.input_tokens,
                    "output_tokens": usage.output_tokens,
                    "total_tokens": usage.total_tokens,
                },
                "tool_calls": [
                    {"id": c.id, "name": c.name, "arguments": c.arguments}
                    for c in output.tool_calls
                ],
                "runtime_metadata": output.metadata,
            },
        )

    async def run_turn(
        self,
        prompt: str,
        *,
        system_prompt: Optional[str] = None,
        model_ref: Optional[str] = None,
        **kwargs: Any,
    ) -> Any:
        """One turn; a PraisonAI ``RuntimeResult``. Errors raise ``AgentRuntimeError``s.

        ``kwargs`` may hold ``history``, ``max_tokens``, ``temperature``, ``stop``,
        ``config``, ``metadata``, ``timeout`` (seconds) and ``tool_definitions`` (a list of
        ``{"name", "description", "parameters"}`` dicts, for runtimes that declare tools).
        """
        request = self._request(prompt, system_prompt, model_ref, kwargs)
        output = await self._runtime.run_turn(request, timeout=kwargs.get("timeout"))
        return self._result(output)

    async def stream_turn(self, prompt: str, **kwargs: Any) -> AsyncIterator[Any]:
        """PraisonAI ``RuntimeDelta``s of one streamed turn (``type`` is the delta's kind)."""
        from praisonaiagents.runtime.protocols import RuntimeDelta

        request = self._request(
            prompt, kwargs.get("system_prompt"), kwargs.get("model_ref"), kwargs
        )
        stream = self._runtime.stream_turn(request, timeout=kwargs.get("timeout"))
        try:
            async for delta in stream:
                metadata = delta.metadata if isinstance(delta.metadata, dict) else {}
                yield RuntimeDelta(type=delta.kind, content=delta.content, metadata=metadata)
        finally:
            await stream.aclose()

    async def execute_agent(self, agent_config: Dict[str, Any], prompt: str,
                            **kwargs: Any) -> Dict[str, Any]:
        """A turn with the agent's ``instructions``/``system_prompt`` and ``model``; a dict with
        ``response`` and ``metadata``."""
        result = await self.run_turn(
            prompt,
            system_prompt=agent_config.get("instructions") or agent_config.get("system_prompt"),
            model_ref=agent_config.get("model") or agent_config.get("llm"),
            **kwargs,
        )
        return {"response": result.content, "metadata": result.metadata,
                "runtime": self.runtime_id}

    async def stream_agent(self, agent_config: Dict[str, Any], prompt: str,
                           **kwargs: Any) -> AsyncIterator[Any]:
        """``execute_agent``, streamed as ``RuntimeDelta``s."""
        kwargs.setdefault(
            "system_prompt",
            agent_config.get("instructions") or agent_config.get("system_prompt"),
        )
        kwargs.setdefault("model_ref", agent_config.get("model") or agent_config.get("llm"))
        async for delta in self.stream_turn(prompt, **kwargs):
            yield delta

    async def validate_config(self, agent_config: Dict[str, Any]) -> List[str]:
        """The problems of ``agent_config["config"]`` (the runtime's own configuration) for
        this runtime; empty when valid or absent."""
        config = agent_config.get("config")
        if config is None:
            return []
        return self._runtime.validate_config(config)

    async def health_check(self) -> Dict[str, Any]:
        """``{"status": "healthy"|"unhealthy", "latency_ms": ..., "detail"|"error": ...}``."""
        start = time.perf_counter()
        try:
            detail = await self._runtime.health()
        except Exception as error:  # noqa: BLE001 — reported, not raised
            return {"status": "unhealthy", "error": str(error),
                    "latency_ms": (time.perf_counter() - start) * 1000}
        return {"status": "healthy", "detail": detail,
                "latency_ms": (time.perf_counter() - start) * 1000}

    def __repr__(self) -> str:
        return f"<NativeRuntime {self.runtime_id} ({self._runtime.isolation})>"


def register(runtimes: Runtimes, registry: Any = None, *, prefix: str = "",
             replace: bool = False) -> List[str]:
    """Registers every runtime of ``runtimes`` (and its aliases) in PraisonAI's registry.

    Args:
        runtimes: a registry that has discovered its plugins.
        registry: a ``praisonaiagents.runtime.registry.RuntimeRegistry``; the global one when
            ``None``.
        prefix: put before every id and alias (``"native-"``...), to keep clear of names the
            registry already has.
        replace: unregister a name the registry already has instead of raising ``ValueError``.

    Returns:
        The ids registered (with the prefix). Each factory resolves its runtime when PraisonAI
        calls it; an alias is added with the registry's ``add_alias``.
    """
    if registry is None:
        from praisonaiagents.runtime import registry as module

        registry = module._global_registry
    registered = []
    for info in runtimes.list():
        name = prefix + info.id
        if replace:
            registry.unregister(name)
        registry.register(
            name,
            functools.partial(NativeRuntime, runtimes, info.id),
            display_name=info.display_name,
            description=info.description,
            version=info.version,
            native=True,
            path=info.path,
            capabilities=list(info.capabilities),
        )
        for alias in info.aliases:
            registry.add_alias(prefix + alias, name)
        registered.append(name)
    return registered


def unregister(runtimes: Runtimes, registry: Any = None, *, prefix: str = "") -> int:
    """Removes what :func:`register` added (with its aliases); returns how many ids."""
    if registry is None:
        from praisonaiagents.runtime import registry as module

        registry = module._global_registry
    return sum(bool(registry.unregister(prefix + info.id)) for info in runtimes.list())
