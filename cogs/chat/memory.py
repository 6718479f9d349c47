"""Conversation memory: the recent turns of each conversation, bounded three ways.

A conversation is a channel, a thread or a DM (its key is chosen by the platform adapter). Each keeps at most
`max_turns` turns and `max_tokens` tokens; at most `max_conversations` are kept, least recently used evicted first.
An evicted conversation is not forgotten for good: the chat service re-reads its tail from the log on next use.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Callable, Iterable

from models.prompt import Turn


class ConversationMemory:
    def __init__(self, *, max_turns: int, max_tokens: int, count_tokens: Callable[[str], int]) -> None:
        self._turns: deque[tuple[Turn, int]] = deque()
        self._tokens = 0
        self._max_turns = max_turns
        self._max_tokens = max_tokens
        self._count = count_tokens

    def add(self, turn: Turn) -> None:
        cost = self._count(f"{turn.name}: {turn.content}")
        self._turns.append((turn, cost))
        self._tokens += cost
        # Trim from the oldest side, but always keep the turn just added.
        while len(self._turns) > 1 and (
            len(self._turns) > self._max_turns or self._tokens > self._max_tokens
        ):
            _, old = self._turns.popleft()
            self._tokens -= old

    def pop_last_assistant(self) -> Turn | None:
        """Remove the last reply (used by regenerate) and return it."""
        if self._turns and self._turns[-1][0].role == "assistant":
            turn, cost = self._turns.pop()
            self._tokens -= cost
            return turn
        return None

    def remove(self, turn: Turn) -> bool:
        """Remove the latest turn equal to `turn` (a held exchange); False when it is not (or no longer) here."""
        for i in range(len(self._turns) - 1, -1, -1):
            kept, cost = self._turns[i]
            if kept == turn:
                del self._turns[i]
                self._tokens -= cost
                return True
        return False

    @property
    def turns(self) -> list[Turn]:
        return [t for t, _ in self._turns]

    @property
    def tokens(self) -> int:
        return self._tokens

    def __len__(self) -> int:
        return len(self._turns)


class MemoryStore:
    """LRU map of conversation id -> ConversationMemory."""

    def __init__(
        self, *, max_conversations: int, max_turns: int, max_tokens: int, count_tokens: Callable[[str], int]
    ) -> None:
        self._items: OrderedDict[str, ConversationMemory] = OrderedDict()
        self._max = max_conversations
        self._new = lambda: ConversationMemory(
            max_turns=max_turns, max_tokens=max_tokens, count_tokens=count_tokens
        )

    def get(self, conversation_id: str) -> ConversationMemory | None:
        memory = self._items.get(conversation_id)
        if memory is not None:
            self._items.move_to_end(conversation_id)
        return memory

    def create(self, conversation_id: str, turns: Iterable[Turn] = ()) -> ConversationMemory:
        memory = self._new()
        for turn in turns:
            memory.add(turn)
        self._items[conversation_id] = memory
        self._items.move_to_end(conversation_id)
        while len(self._items) > self._max:
            self._items.popitem(last=False)
        return memory

    def drop(self, conversation_id: str) -> bool:
        return self._items.pop(conversation_id, None) is not None

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, conversation_id: object) -> bool:
        return conversation_id in self._items
