"""Vectorised segment kernels shared by the samplers.

Every function works on whole arrays of "segments" (CSR rows): there is no
Python loop over rows or entries, only over a constant number of size classes
or retry rounds, so cost is proportional to the work actually sampled.
"""

from __future__ import annotations

from typing import Union

import numpy as np
import torch

#: Rows with more than ``DENSE_WINDOW * k`` candidates are sampled by drawing
#: positions with replacement (see :func:`segment_sample`) instead of ranking all
#: of them, so the cost per row is O(k log k) whatever its degree.
DENSE_WINDOW = 2

#: What ``sample(generator=...)`` accepts.
GeneratorLike = Union[torch.Generator, np.random.Generator, int, None]


def as_rng(generator: GeneratorLike) -> np.random.Generator:
    """A numpy ``Generator`` for one call.

    A ``torch.Generator`` (or, with ``None``, torch's global RNG, so that
    ``torch.manual_seed`` makes sampling reproducible) seeds a fresh numpy
    generator; drawing that seed advances the torch generator, so successive calls
    differ.
    """
    if isinstance(generator, np.random.Generator):
        return generator
    if isinstance(generator, (int, np.integer)):
        return np.random.default_rng(int(generator))
    if generator is None or isinstance(generator, torch.Generator):
        seed = torch.randint(0, 2**62, (1,), generator=generator).item()
        return np.random.default_rng(seed)
    raise TypeError(f"generator must be a torch/numpy Generator, an int or None, not {type(generator)}")


def ragged_arange(counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For segments of lengths ``counts``: (segment id, offset in segment) of every entry.

    ``counts = [2, 0, 3]`` gives ``seg = [0, 0, 2, 2, 2]``, ``off = [0, 1, 0, 1, 2]``.
    """
    counts = np.asarray(counts, dtype=np.int64)
    seg = np.repeat(np.arange(len(counts), dtype=np.int64), counts)
    starts = np.cumsum(counts) - counts
    off = np.arange(len(seg), dtype=np.int64) - starts[seg]
    return seg, off


def segment_sample(counts: np.ndarray, k: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    r"""Uniformly draw ``min(k, n)`` distinct offsets from each segment of length ``n``.

    Returns ``(seg, off)``: segment ids and offsets ``0 <= off < counts[seg]``;
    ``k < 0`` takes every entry. Three size classes, each done for all its rows at
    once:

    * :math:`n \le k`: every offset (exact, no randomness).
    * :math:`k < n \le 2k`: random keys over the whole row (a dense
      ``[rows, max n]`` matrix, padding keyed +inf) and the ``k`` smallest keys via
      ``argpartition``: a uniform random :math:`k`-subset, in O(n) = O(k) per row.
    * :math:`n > 2k`: draw :math:`m = 2k` positions *with* replacement and keep a
      uniform random :math:`k`-subset of the distinct ones. By symmetry the set of
      distinct positions is, given its size :math:`d`, a uniform :math:`d`-subset, so
      a uniform :math:`k`-subset of it is a uniform :math:`k`-subset of the row. Since
      :math:`n > m`, :math:`E[d] \ge n(1-e^{-m/n}) > 1.26k`; the rare rows with
      :math:`d < k` are redrawn (rejection only conditions on :math:`d`, so stays
      uniform). O(k log k) per row however large :math:`n` is (hub nodes).
    """
    counts = np.asarray(counts, dtype=np.int64)
    if k < 0:
        return ragged_arange(counts)
    if k == 0 or len(counts) == 0:
        empty = np.empty(0, dtype=np.int64)
        return empty, empty
    if counts.max() <= k:  # common fast path (e.g. f2p rows of degree 1)
        return ragged_arange(counts)
    segs, offs = [], []

    small = np.flatnonzero(counts <= k)
    s, o = ragged_arange(counts[small])
    segs.append(small[s])
    offs.append(o)

    mid = np.flatnonzero((counts > k) & (counts <= DENSE_WINDOW * k))
    if len(mid):
        s, o = _sample_dense(counts[mid], k, rng)
        segs.append(mid[s])
        offs.append(o)

    large = np.flatnonzero(counts > DENSE_WINDOW * k)
    while len(large):
        ok, o = _sample_with_dedup(counts[large], k, rng)
        segs.append(np.repeat(large[ok], k))
        offs.append(o)
        large = large[~ok]  # d < k: redraw those rows only

    return np.concatenate(segs), np.concatenate(offs)


def _sample_dense(n: np.ndarray, k: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    width = int(n.max())
    keys = rng.random((len(n), width))
    keys[np.arange(width)[None, :] >= n[:, None]] = 2.0  # padding never wins: n > k
    off = np.argpartition(keys, k - 1, axis=1)[:, :k]
    seg = np.repeat(np.arange(len(n), dtype=np.int64), k)
    return seg, off.reshape(-1).astype(np.int64, copy=False)


def _sample_with_dedup(n: np.ndarray, k: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    m = 2 * k
    draws = np.sort((rng.random((len(n), m)) * n[:, None]).astype(np.int64), axis=1)
    dup = np.zeros(draws.shape, dtype=bool)
    dup[:, 1:] = draws[:, 1:] == draws[:, :-1]
    ok = (m - dup.sum(axis=1)) >= k
    keys = rng.random(draws.shape)
    keys[dup] = 2.0  # a repeated position is never picked twice
    pick = np.argpartition(keys[ok], k - 1, axis=1)[:, :k]
    off = np.take_along_axis(draws[ok], pick, axis=1)
    return ok, off.reshape(-1)


def distinct(ids: np.ndarray, slot: np.ndarray) -> np.ndarray:
    """The distinct values of ``ids`` (first-seen order not guaranteed) in O(len(ids)).

    ``slot`` is a scratch int array covering every id. After ``slot[ids] = arange``
    each distinct id holds exactly one of its own positions (whichever write won),
    so keeping the positions that read back their own index keeps each id once.
    Every slot read was written just before, so ``slot`` never needs resetting —
    unlike ``np.unique`` there is no sort.
    """
    pos = np.arange(len(ids), dtype=np.int64)
    slot[ids] = pos
    return ids[slot[ids] == pos]


def weighted_sample(weights: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    r"""Indices of ``min(k, len)`` entries drawn without replacement, probability ∝ weight.

    Efraimidis & Spirakis' keys :math:`E_i / w_i` with :math:`E_i \sim \mathrm{Exp}(1)`:
    the ``k`` smallest keys are distributed exactly as ``k`` successive draws
    without replacement proportional to ``w``. Zero weights are never drawn.
    """
    weights = np.asarray(weights, dtype=np.float64)
    positive = np.flatnonzero(weights > 0)
    if len(positive) <= k:
        return positive
    keys = rng.standard_exponential(len(positive)) / weights[positive]
    return positive[np.argpartition(keys, k - 1)[:k]]
