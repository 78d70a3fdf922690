"""Subgraph samplers over CSR arrays built once per graph (no pyg-lib needed).

- :class:`HGSampler`: HGSampling (HGT, Alg. 1) for pretraining on balanced,
  type-aware induced subgraphs, optionally pruned to a timestamp.
- :class:`TemporalNeighborSampler`: disjoint temporal neighbour sampling for
  fine-tuning (PyG ``NeighborLoader`` with ``disjoint=True``,
  ``temporal_strategy="uniform"``).
- :func:`build_csr`: the per-edge-type CSR (by destination, time-sorted) both use.
"""

from relcore.sampling.csr import CSR, build_csr
from relcore.sampling.hgt import HGSampler, default_seed_type
from relcore.sampling.temporal import TemporalNeighborSampler

__all__ = ["CSR", "HGSampler", "TemporalNeighborSampler", "build_csr", "default_seed_type"]
