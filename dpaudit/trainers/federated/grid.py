"""An in-process Flower ``Grid``: every pushed message is handled by the ``ClientApp`` at once.

Flower's simulation engine (``flwr.simulation.run_simulation``) always starts Ray
(about 10 s, extra processes, a random node order). A strategy only needs a
:class:`flwr.serverapp.Grid`, so this one calls the ``ClientApp`` directly,
sequentially, with node ids ``1..N`` (partition id + 1) and one persistent
``Context`` per client: deterministic and cheap (a few ms per round). It also
counts the bytes of every message down and every reply up
(``RecordDict`` values' ``count_bytes()``), per round.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from typing import Any

from flwr.app import Context, Message, RecordDict
from flwr.serverapp import Grid

__all__ = ["CountingGrid", "LocalGrid", "message_bytes", "prepare_flower_identity"]


def prepare_flower_identity() -> None:
    """Set the task identity Flower's ``Message`` constructor reads (as ``run_simulation`` does)."""
    from flwr.common.constant import SUPERLINK_NODE_ID
    from flwr.supercore.task_identity import TaskIdentity

    TaskIdentity.task_id = 1
    TaskIdentity.run_id = 1
    TaskIdentity.node_id = SUPERLINK_NODE_ID


def message_bytes(message: Message) -> int:
    """Bytes of a message's records (arrays, metrics, configs), as Flower counts them."""
    return int(sum(record.count_bytes() for record in message.content.values()))


class LocalGrid(Grid):
    """Runs ``client_app`` for each message, in order; node ``i + 1`` is partition ``i``.

    Attributes:
        bytes_down: bytes sent to clients, by server round (the message's ``group_id``).
        bytes_up: bytes of the clients' replies, by server round.
    """

    def __init__(self, client_app: Any, num_nodes: int, run_config: dict[str, Any] | None = None):
        prepare_flower_identity()
        self.client_app = client_app
        self.contexts = {
            i + 1: Context(
                run_id=1,
                node_id=i + 1,
                node_config={"partition-id": i, "num-partitions": num_nodes},
                state=RecordDict(),
                run_config=dict(run_config or {}),
            )
            for i in range(num_nodes)
        }
        self.bytes_down: dict[str, int] = {}
        self.bytes_up: dict[str, int] = {}
        self._replies: dict[str, Message] = {}
        self._ids = itertools.count(1)
        self._run: Any = None

    def set_run(self, run: Any) -> None:
        self._run = run

    @property
    def run(self) -> Any:
        return self._run

    def create_message(
        self,
        content: RecordDict,
        message_type: str,
        dst_node_id: int,
        group_id: str,
        ttl: float | None = None,
    ) -> Message:
        return Message(content, dst_node_id, message_type, ttl=ttl, group_id=group_id)

    def get_node_ids(self) -> Iterable[int]:
        return list(self.contexts)

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        ids = []
        for message in messages:
            node = message.metadata.dst_node_id
            if node not in self.contexts:
                raise ValueError(f"no client with node id {node}")
            group = str(message.metadata.group_id)
            # Flower's own link state sets these private fields the same way (no setters exist).
            mid = f"m{next(self._ids)}"
            message.metadata.__dict__["_message_id"] = mid
            self.bytes_down[group] = self.bytes_down.get(group, 0) + message_bytes(message)
            reply = self.client_app(message, self.contexts[node])
            reply.metadata.__dict__["_src_node_id"] = node
            self.bytes_up[group] = self.bytes_up.get(group, 0) + message_bytes(reply)
            self._replies[mid] = reply
            ids.append(mid)
        return ids

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        return [self._replies.pop(mid) for mid in message_ids]

    def send_and_receive(
        self, messages: Iterable[Message], *, timeout: float | None = None
    ) -> Iterable[Message]:
        return self.pull_messages(self.push_messages(messages))


class CountingGrid(Grid):
    """Wraps another ``Grid`` (Flower's, under the Ray engine) and counts bytes per round.

    Attributes:
        bytes_down, bytes_up: as :class:`LocalGrid`'s, keyed by the message's ``group_id``.
    """

    def __init__(self, inner: Grid):
        self.inner = inner
        self.bytes_down: dict[str, int] = {}
        self.bytes_up: dict[str, int] = {}

    def set_run(self, run: Any) -> None:
        self.inner.set_run(run)

    @property
    def run(self) -> Any:
        return self.inner.run

    def create_message(
        self,
        content: RecordDict,
        message_type: str,
        dst_node_id: int,
        group_id: str,
        ttl: float | None = None,
    ) -> Message:
        return self.inner.create_message(content, message_type, dst_node_id, group_id, ttl)

    def get_node_ids(self) -> Iterable[int]:
        return self.inner.get_node_ids()

    def _count(self, table: dict[str, int], messages: list[Message]) -> None:
        for m in messages:
            group = str(m.metadata.group_id)
            table[group] = table.get(group, 0) + message_bytes(m)

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        messages = list(messages)
        self._count(self.bytes_down, messages)
        return self.inner.push_messages(messages)

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        replies = list(self.inner.pull_messages(message_ids))
        self._count(self.bytes_up, replies)
        return replies

    def send_and_receive(
        self, messages: Iterable[Message], *, timeout: float | None = None
    ) -> Iterable[Message]:
        messages = list(messages)
        self._count(self.bytes_down, messages)
        replies = list(self.inner.send_and_receive(messages, timeout=timeout))
        self._count(self.bytes_up, replies)
        return replies
