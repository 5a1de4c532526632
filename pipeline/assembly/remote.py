"""Remote calls: the spans whose work continues in another service, so a trace is not over until a span of
the callee answers them (a span whose parent is the call) or they have waited `remote_wait_s`.

A span is a call when our SDK injected `traceparent` from it, or when OpenTelemetry says it is a CLIENT or
PRODUCER span. LLM, embedding and retriever spans are CLIENT spans too, but the provider never sends spans
back, so they are not waited for. Nor are peers that never answered: `RemotePeers` remembers, per process,
the peers (service and address, or span name) whose calls went unanswered several times in a row, and stops
waiting for them until one answers again. It is a hint, not state: losing it costs one wait per peer.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

CALL_KINDS = frozenset({"client", "producer"})
NEVER_ANSWERED_TYPES = frozenset({"llm", "embedding", "retriever"})
_PEER_ATTRIBUTES = ("peer.service", "server.address", "net.peer.name", "http.host", "rpc.service",
                    "messaging.destination.name")


def is_call(span: dict[str, Any]) -> bool:
    return span.get("kind") in CALL_KINDS and span.get("span_type") not in NEVER_ANSWERED_TYPES


def peer_of(span: dict[str, Any]) -> str:
    attributes = span.get("attributes") or {}
    target = next((str(attributes[k]) for k in _PEER_ATTRIBUTES if attributes.get(k)), None)
    return f"{span.get('service') or ''}\x00{target or span.get('name', '')}"


class RemotePeers:
    """Peers whose calls are answered, and those that stopped answering (bounded, least recently used)."""

    def __init__(self, unanswered_limit: int = 3, max_peers: int = 10_000) -> None:
        self.unanswered_limit = unanswered_limit
        self.max_peers = max_peers
        self._streaks: OrderedDict[str, int] = OrderedDict()  # peer -> calls unanswered in a row

    def expects_answer(self, span: dict[str, Any]) -> bool:
        if not is_call(span):
            return False
        return self._streaks.get(peer_of(span), 0) < self.unanswered_limit

    def answered(self, span: dict[str, Any]) -> None:
        self._note(peer_of(span), 0)

    def unanswered(self, span: dict[str, Any]) -> None:
        peer = peer_of(span)
        self._note(peer, self._streaks.get(peer, 0) + 1)

    def _note(self, peer: str, streak: int) -> None:
        self._streaks[peer] = streak
        self._streaks.move_to_end(peer)
        while len(self._streaks) > self.max_peers:
            self._streaks.popitem(last=False)
