"""The simulator's prefix cache: a radix tree of token sequences whose tokens live in the KV pool.

It imitates SGLang's ``RadixCache`` (``python/sglang/srt/mem_cache/radix_cache.py``):

- ``match`` finds the longest cached prefix of a sequence (splitting an edge where the match ends, so the
  match can be locked exactly) and marks the path as used now (LRU order);
- ``insert`` adds a sequence; only its uncached tail becomes new tree tokens;
- a request holds a ``lock`` on the deepest node of its cached prefix while it runs, so that path cannot be
  evicted; ``evictable`` counts the tokens of unlocked nodes;
- ``evict`` frees unlocked leaves, least recently used first, until enough tokens are free (SGLang's default
  ``--radix-eviction-policy lru``).

Tokens are any hashable values (words by the simulator's word rule, or ids from a tokenizer). Access order
comes from a counter, not a clock, so a run is reproducible.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Hashable, Iterator, Sequence

__all__ = ["RadixCache", "RadixNode"]

Tokens = Sequence[Hashable]


class RadixNode:
    """A tree node: the tokens on the edge into it, its children by first token, and who holds it."""

    __slots__ = ("access", "children", "key", "lock", "parent")

    def __init__(self, key: tuple[Hashable, ...], parent: RadixNode | None) -> None:
        self.key = key
        self.parent = parent
        self.children: dict[Hashable, RadixNode] = {}
        self.lock = 0  # running requests whose cached prefix passes through this node
        self.access = 0


def _common(key: tuple[Hashable, ...], tokens: Tokens, start: int) -> int:
    """Length of the common prefix of ``key`` and ``tokens[start:]``."""
    n = min(len(key), len(tokens) - start)
    if tuple(tokens[start : start + n]) == key[:n]:
        return n
    i = 0
    while i < n and key[i] == tokens[start + i]:
        i += 1
    return i


class RadixCache:
    """Cached token sequences sharing storage for their common prefixes; sizes in tokens."""

    def __init__(self) -> None:
        self.root = RadixNode((), None)
        self.root.lock = 1  # never evicted
        self.total = 0  # tokens stored in the tree
        self.evictable = 0  # tokens in nodes no running request holds
        self._tick = itertools.count(1)

    def match_length(self, tokens: Tokens) -> int:
        """Tokens of the longest cached prefix of ``tokens``; changes nothing (for ordering the queue)."""
        node, i = self.root, 0
        while i < len(tokens):
            child = node.children.get(tokens[i])
            if child is None:
                break
            m = _common(child.key, tokens, i)
            i += m
            if m < len(child.key):
                break
            node = child
        return i

    def match(self, tokens: Tokens) -> tuple[int, RadixNode]:
        """The longest cached prefix of ``tokens``: its length and the node it ends at (marked used now)."""
        node, i = self.root, 0
        now = next(self._tick)
        while i < len(tokens):
            child = node.children.get(tokens[i])
            if child is None:
                break
            m = _common(child.key, tokens, i)
            if m < len(child.key):
                child = self._split(child, m)
            child.access = now
            i += m
            node = child
        return i, node

    def insert(self, tokens: Tokens) -> tuple[int, RadixNode]:
        """Cache ``tokens``: returns how many tokens were new to the tree and the node holding the last one."""
        matched, node = self.match(tokens)
        if matched == len(tokens):
            return 0, node
        leaf = RadixNode(tuple(tokens[matched:]), node)
        leaf.access = next(self._tick)
        node.children[leaf.key[0]] = leaf
        added = len(leaf.key)
        self.total += added
        self.evictable += added
        return added, leaf

    def lock(self, node: RadixNode) -> None:
        """A request holds the path from the root to ``node``."""
        while node is not self.root:
            if node.lock == 0:
                self.evictable -= len(node.key)
            node.lock += 1
            assert node.parent is not None
            node = node.parent

    def unlock(self, node: RadixNode) -> None:
        while node is not self.root:
            node.lock -= 1
            if node.lock == 0:
                self.evictable += len(node.key)
            assert node.parent is not None
            node = node.parent

    def evict(self, tokens: int) -> int:
        """Free at least ``tokens`` tokens of unlocked leaves, least recently used first; returns those freed."""
        heap = [(n.access, id(n), n) for n in self._nodes() if not n.children and n.lock == 0]
        heapq.heapify(heap)
        freed = 0
        while freed < tokens and heap:
            _, _, node = heapq.heappop(heap)
            parent = node.parent
            assert parent is not None
            del parent.children[node.key[0]]
            size = len(node.key)
            self.total -= size
            self.evictable -= size
            freed += size
            if parent is not self.root and not parent.children and parent.lock == 0:
                heapq.heappush(heap, (parent.access, id(parent), parent))
        return freed

    def reset(self) -> None:
        """Drop everything (``/flush_cache``); only valid while no request holds a node."""
        self.__init__()  # type: ignore[misc]

    def _split(self, child: RadixNode, at: int) -> RadixNode:
        """Cut ``child``'s edge after ``at`` tokens; returns the new node holding the first part."""
        parent = child.parent
        assert parent is not None
        head = RadixNode(child.key[:at], parent)
        head.lock, head.access = child.lock, child.access
        child.key = child.key[at:]
        child.parent = head
        head.children[child.key[0]] = child
        parent.children[head.key[0]] = head
        return head

    def _nodes(self) -> Iterator[RadixNode]:
        stack = list(self.root.children.values())
        while stack:
            node = stack.pop()
            yield node
            stack.extend(node.children.values())
