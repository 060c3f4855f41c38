"""Infinite domain-mixture batch sampler with checkpointable, rank-sharded state.

Sampling follows method.md: draw a domain ``i ~ p``, then the next example of domain
``i`` from a per-domain reshuffled cycle. The sampler yields *batches* of dataset
indices (use it as ``DataLoader(batch_sampler=...)``).

Determinism and resume. Every random draw is a pure function of
``(seed, global batch number)`` or ``(seed, domain, cycle number)``, so the whole state
is a handful of integers plus the weight schedule. A resumed run restores the state *as
of the last consumed batch* and redraws exactly the batches an uninterrupted run would
have drawn.

Weight changes and prefetching. :meth:`set_weights` takes effect for the first batch the
sampler has not yet drawn. The sampler runs in the main process, but a ``DataLoader``
draws ``num_workers * prefetch_factor`` batches ahead (and Lightning prefetches one more),
so a change reaches the training step after at most that many batches. The effective
batch number of every change is recorded in a schedule, which is part of the state: a
resumed run replays it and draws the same prefetched batches with the same weights.

DDP. All ranks generate the same *global* batch of ``batch_size * world_size`` draws and
rank ``r`` keeps positions ``r, r + W, ...``: ranks see disjoint examples (within a
domain cycle), and the union over ranks is the batch a single process with the global
batch size would draw. Set ``use_distributed_sampler: false`` in the trainer.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

__all__ = ["MixtureBatchSampler"]


def _compact(ix: np.ndarray) -> np.ndarray:
    """``ix`` as int32 when every index fits (else int64): the members and the cached
    permutation of each domain hold one entry per training example, so at 2M examples
    int64 costs 30 MiB more RSS than int32 for the same batches (drawn indices are int64)."""
    ix = ix.astype(np.int64, copy=False).reshape(-1)
    if ix.size and (ix.min() < 0 or ix.max() > np.iinfo(np.int32).max):
        return ix
    return ix.astype(np.int32)


def _as_weights(p: Sequence[float] | np.ndarray, m: int) -> np.ndarray:
    w = np.asarray(p, dtype=np.float64).reshape(-1)
    if w.shape[0] != m:
        raise ValueError(
            f"mixture weights: expected {m} entries (one per domain), got {w.shape[0]}"
        )
    if not np.all(np.isfinite(w)) or np.any(w < 0) or w.sum() <= 0:
        raise ValueError(f"mixture weights must be finite, >= 0 and not all zero, got {w.tolist()}")
    return w / w.sum()


class MixtureBatchSampler:
    """Draws batches of indices from domains according to mixture weights.

    Args:
        domain_indices: for each domain, the dataset indices of its examples.
        batch_size: per-rank batch size.
        weights: initial mixture ``p`` (defaults to uniform).
        seed: drives every random draw.
        rank: this process's rank.
        world_size: number of ranks sharing the global stream.
        history: how many drawn-but-maybe-unconsumed batch states to keep (must exceed
            the loader's prefetch depth).
    """

    def __init__(
        self,
        domain_indices: Sequence[Sequence[int] | np.ndarray],
        batch_size: int,
        weights: Sequence[float] | np.ndarray | None = None,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        history: int = 64,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"data.batch_size must be >= 1, got {batch_size}")
        if not 0 <= rank < world_size:
            raise ValueError(f"sampler rank {rank} outside world size {world_size}")
        self.domains = [_compact(np.asarray(ix)) for ix in domain_indices]
        empty = [i for i, ix in enumerate(self.domains) if ix.size == 0]
        if empty:
            raise ValueError(f"domains {empty} have zero examples; every domain needs >= 1")
        self.m = len(self.domains)
        self.batch_size = int(batch_size)
        self.seed = int(seed)
        self.rank = int(rank)
        self.world_size = int(world_size)
        w = np.full(self.m, 1.0 / self.m) if weights is None else _as_weights(weights, self.m)
        # schedule: list of (first global batch number, weights); always non-empty.
        self._schedule: list[tuple[int, np.ndarray]] = [(0, w)]
        self._batch = 0  # number of global batches drawn so far
        self._cycle = np.zeros(self.m, dtype=np.int64)
        self._cursor = np.zeros(self.m, dtype=np.int64)
        self._perm_cache: dict[int, tuple[int, np.ndarray]] = {}
        self._history: deque[tuple[int, np.ndarray, np.ndarray]] = deque(maxlen=history)

    # ------------------------------------------------------------------ weights
    @property
    def weights(self) -> np.ndarray:
        """The latest weights (those applied to batches not drawn yet)."""
        return self._schedule[-1][1].copy()

    def set_weights(self, p: Sequence[float] | np.ndarray) -> int:
        """Use ``p`` for every batch not drawn yet; returns that first batch number."""
        w = _as_weights(p, self.m)
        start = self._batch
        # Drop entries that never took effect (several updates before the next draw).
        while len(self._schedule) > 1 and self._schedule[-1][0] >= start:
            self._schedule.pop()
        if self._schedule[-1][0] >= start:
            self._schedule[-1] = (start, w)
        else:
            self._schedule.append((start, w))
        return start

    def schedule_segments(
        self,
        segments: Sequence[tuple[int, Sequence[float] | np.ndarray]],
        then: Sequence[float] | np.ndarray,
    ) -> int:
        """Queue temporary mixtures for the next batches, then ``then`` (in-line detours).

        Segment ``j`` covers ``n_j`` consecutive global batches starting right after segment
        ``j - 1``; the first starts at the first batch not drawn yet. Every entry goes into
        the recorded schedule, so a run resumed inside a segment redraws the same batches.

        Args:
            segments: ``(number of global batches >= 1, weights [m])`` in order.
            then: the mixture after the last segment.

        Returns:
            The global batch number where the first segment starts.

        Raises:
            ValueError: a segment of fewer than one batch, or invalid weights.
        """
        start = self.set_weights(then)
        at = start
        entries: list[tuple[int, np.ndarray]] = []
        for n, w in segments:
            if int(n) < 1:
                raise ValueError(f"a detour segment needs >= 1 batch, got {n}")
            entries.append((at, _as_weights(w, self.m)))
            at += int(n)
        if entries:
            # set_weights left (start, then) as the last entry: the segments come first.
            self._schedule[-1] = entries[0]
            self._schedule.extend(entries[1:])
            self._schedule.append((at, _as_weights(then, self.m)))
        return start

    def _weights_for(self, batch: int) -> np.ndarray:
        for start, w in reversed(self._schedule):
            if start <= batch:
                return w
        return self._schedule[0][1]

    # ------------------------------------------------------------------ drawing
    def _perm(self, domain: int, cycle: int) -> np.ndarray:
        cached = self._perm_cache.get(domain)
        if cached is not None and cached[0] == cycle:
            return cached[1]
        rng = np.random.default_rng([self.seed, 1, domain, cycle])
        perm = self.domains[domain][rng.permutation(self.domains[domain].size)]
        self._perm_cache[domain] = (cycle, perm)
        return perm

    def _take(self, domain: int, count: int) -> np.ndarray:
        """Next ``count`` indices of a domain's reshuffled cycles."""
        out = np.empty(count, dtype=np.int64)
        n = self.domains[domain].size
        filled = 0
        while filled < count:
            perm = self._perm(domain, int(self._cycle[domain]))
            cur = int(self._cursor[domain])
            k = min(count - filled, n - cur)
            out[filled : filled + k] = perm[cur : cur + k]
            filled += k
            cur += k
            if cur == n:
                self._cycle[domain] += 1
                cur = 0
            self._cursor[domain] = cur
        return out

    def draw_global_batch(self) -> tuple[np.ndarray, np.ndarray]:
        """Draw the next global batch; returns (indices, domain ids), both ``[B * W]``."""
        self._history.append((self._batch, self._cycle.copy(), self._cursor.copy()))
        size = self.batch_size * self.world_size
        rng = np.random.default_rng([self.seed, 0, self._batch])
        doms = rng.choice(self.m, size=size, p=self._weights_for(self._batch))
        idx = np.empty(size, dtype=np.int64)
        for d in np.unique(doms):
            pos = np.flatnonzero(doms == d)
            idx[pos] = self._take(int(d), pos.size)
        self._batch += 1
        return idx, doms

    def __iter__(self) -> Iterator[list[int]]:
        while True:
            idx, _ = self.draw_global_batch()
            yield idx[self.rank :: self.world_size].tolist()

    # ------------------------------------------------------------------ state
    @property
    def batches_drawn(self) -> int:
        """Global batches drawn so far (including those still in a prefetch queue)."""
        return self._batch

    def state_dict(self, consumed_batches: int | None = None) -> dict[str, Any]:
        """State as of ``consumed_batches`` (default: everything drawn so far).

        Only plain tensors-free Python types: loads with ``torch.load(weights_only=True)``.
        """
        if consumed_batches is None or consumed_batches == self._batch:
            batch, cycle, cursor = self._batch, self._cycle, self._cursor
        else:
            match = [h for h in self._history if h[0] == consumed_batches]
            if not match:
                raise RuntimeError(
                    f"sampler state for batch {consumed_batches} is no longer in the history "
                    f"(drawn {self._batch}, history {len(self._history)}): lower "
                    "data.num_workers (a loader draws num_workers * prefetch_factor batches ahead)"
                )
            batch, cycle, cursor = match[0]
        return {
            "batch": int(batch),
            "cycle": [int(c) for c in cycle],
            "cursor": [int(c) for c in cursor],
            "seed": self.seed,
            "num_domains": self.m,
            "schedule": [(int(s), [float(x) for x in w]) for s, w in self._schedule],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a state written by :meth:`state_dict`."""
        if int(state["num_domains"]) != self.m:
            raise ValueError(
                f"checkpoint sampler has {state['num_domains']} domains, this run has {self.m}: "
                "resume with the same data/regroup config"
            )
        self._batch = int(state["batch"])
        self._cycle = np.asarray(state["cycle"], dtype=np.int64)
        self._cursor = np.asarray(state["cursor"], dtype=np.int64)
        self.seed = int(state["seed"])
        self._schedule = [(int(s), np.asarray(w, dtype=np.float64)) for s, w in state["schedule"]]
        self._history.clear()
        self._perm_cache.clear()
