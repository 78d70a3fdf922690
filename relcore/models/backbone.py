r"""The RDL backbone: stages 1-3 of the relational deep learning blueprint, no head.

For a mini-batch subgraph with node types :math:`\phi` and edge types :math:`\psi`:

1. attribute encoders + table model (:mod:`relcore.models.table`) give each row
   :math:`v` of type :math:`\phi` a vector :math:`\mathbf{x}_v^{(0)} \in \mathbb{R}^d`;
2. in temporal batches, timed tables add an encoding of the row's age relative to its
   seed, :math:`\mathbf{x}_v^{(0)} \mathrel{+}= \mathbf{W}_\phi\,
   \mathrm{PE}\big((t_{\text{seed}(v)} - t_v) / 1\,\text{day}\big)`;
3. heterogeneous GraphSAGE, for :math:`l = 1 \dots L`:

.. math::
    \mathbf{x}_v^{(l)} = \mathrm{ReLU}\Big(\mathrm{LN}_{\phi(v)}\Big(\sum_{\psi = (\cdot, \cdot, \phi(v))}
    \mathbf{W}^{(l)}_{\psi,1} \mathbf{x}_v^{(l-1)} + \mathbf{W}^{(l)}_{\psi,2}
    \bigoplus_{u \in \mathcal{N}_\psi(v)} \mathbf{x}_u^{(l-1)} \Big)\Big)

with :math:`\bigoplus` = sum or mean (SAGEConv's ``aggr``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from relbench.modeling.nn import HeteroGraphSAGE, HeteroTemporalEncoder
from torch import Tensor
from torch_geometric.data import HeteroData
from torch_geometric.utils import scatter

from relcore.models.config import BackboneConfig
from relcore.models.factored import FactoredRows
from relcore.models.meta import EdgeType, GraphMeta
from relcore.models.plan import Plan, full_plan, shared_plan, trimmed_plan
from relcore.models.table import make_table_model

SECONDS_PER_DAY = 60 * 60 * 24
# A node type's inputs stay look-ups when its nodes repeat rows and time differences this
# often: then sparse products beat materialising them; below it, materialising wins (the
# threshold is measured on rel-f1 at 2 and 3 hops: sweeps/bench/results/depth.md).
FACTOR_MIN_REPEATS = 8


class RelativeTimeEncoder(HeteroTemporalEncoder):
    r"""relbench's :class:`HeteroTemporalEncoder` fed per-node seed times.

    Our temporal batches carry ``seed_time`` per node rather than per seed, so the
    ``seed_time[batch]`` look-up relbench does is already done:

    .. math::
        \mathbf{t}_v = \mathbf{W}_\phi\, \mathrm{PE}\big((t_{\text{seed}(v)} - t_v) / 86400\big) + \mathbf{b}_\phi

    :math:`\mathbf{t}_v` depends on the node only through the time difference, and
    batches repeat few of them (seeds share timestamps, rows share dates): the encoding
    is computed once per distinct difference and looked up per node. Same values; on
    rel-f1's 3-hop batches (2.5M nodes) it replaces most of a 2.5M x 128 x 128 product.
    """

    def factors(self, seed_time_dict: dict[str, Tensor],
                time_dict: dict[str, Tensor]) -> dict[str, tuple[Tensor, Tensor]]:
        """``{node_type: (encodings of the distinct differences, node -> difference)}``."""
        out: dict[str, tuple[Tensor, Tensor]] = {}
        for node_type, time in time_dict.items():
            delta, node_to_delta = torch.unique(seed_time_dict[node_type] - time, return_inverse=True)
            rel_days = delta.to(torch.float32) / SECONDS_PER_DAY
            out[node_type] = (self.lin_dict[node_type](self.encoder_dict[node_type](rel_days)), node_to_delta)
        return out

    def forward(self, seed_time_dict: dict[str, Tensor],  # type: ignore[override]
                time_dict: dict[str, Tensor]) -> dict[str, Tensor]:
        return {t: encoded.index_select(0, node_to_delta)
                for t, (encoded, node_to_delta) in self.factors(seed_time_dict, time_dict).items()}


class HeteroSAGE(HeteroGraphSAGE):
    r"""relbench's :class:`HeteroGraphSAGE` -- ``HeteroConv`` of one ``SAGEConv`` per
    edge type, summed over edge types, LayerNorm + ReLU per node type after every
    layer -- computed with one matrix product per destination type.

    ``HeteroConv`` runs every edge type's ``SAGEConv`` separately; for destination
    type :math:`\phi` with incoming edge types :math:`\psi_1 \dots \psi_k` its sum is

    .. math::
        \sum_{i} \big(\mathbf{W}_{\psi_i,l}\, \mathbf{a}_{\psi_i} + \mathbf{b}_{\psi_i}
        + \mathbf{W}_{\psi_i,r}\, \mathbf{x}\big)
        = [\mathbf{W}_{\psi_1,l} \,\|\, \dots \,\|\, \mathbf{W}_{\psi_k,l} \,\|\,
        \textstyle\sum_i \mathbf{W}_{\psi_i,r}]\,
        [\mathbf{a}_{\psi_1} \,\|\, \dots \,\|\, \mathbf{a}_{\psi_k} \,\|\, \mathbf{x}]
        + \textstyle\sum_i \mathbf{b}_{\psi_i}

    with :math:`\mathbf{a}_\psi` the sum/mean of the source embeddings along
    :math:`\psi`; when the source type has fewer rows than the destination, the
    source rows are projected first (:math:`\mathbf{W}\mathbf{a}_\psi` = sum/mean of
    :math:`\mathbf{W}\mathbf{x}_u`). Same parameters (the ``SAGEConv`` modules hold
    them, so state dicts match relbench's) and the same function, but far fewer
    matrix products and fewer FLOPs, which is what a CPU step is made of. As in ``HeteroConv``, only edge types present in the
    batch contribute, and a node type receiving no messages keeps its embedding
    (``HeteroConv`` would drop it from the output).
    """

    def __init__(self, node_types: list[str], edge_types: list[EdgeType], channels: int,
                 aggr: str = "mean", num_layers: int = 2):
        super().__init__(node_types, edge_types, channels, aggr=aggr, num_layers=num_layers)
        self.aggr = aggr

    def forward(self, x_dict: dict[str, Tensor | FactoredRows], plan: Plan) -> dict[str, Tensor]:  # type: ignore[override]
        """Message passing as ``plan`` lays it out (:mod:`relcore.models.plan`); returns
        ``plan.out``'s rows of the last layer."""
        for layer, conv, norm_dict in zip(plan.layers, self.convs, self.norms):
            incoming: dict[str, list[EdgeType]] = {}
            for et in layer.edges:
                if et[0] in x_dict and et[2] in x_dict:
                    incoming.setdefault(et[2], []).append(et)
            out: dict[str, Tensor] = {}
            for dst, ets in incoming.items():
                n_dst = layer.num_out[dst]
                x_dst = _take(x_dict[dst], layer.root[dst])
                feats, weights = [x_dst], []
                bias: Tensor | int = 0
                w_root: Tensor | int = 0
                projected: Tensor | int = 0
                for et in ets:
                    sage = conv.convs[et]
                    x_src = x_dict[et[0]]
                    src_idx, dst_idx = layer.edges[et]
                    bias = bias + sage.lin_l.bias
                    w_root = w_root + sage.lin_r.weight
                    if isinstance(x_src, FactoredRows):  # first layer of a temporal batch
                        feats.append(x_src.aggregate(src_idx, dst_idx, n_dst, self.aggr))
                        weights.append(sage.lin_l.weight)
                    elif x_src.size(0) < n_dst:
                        # W(sum|mean of x_u) = sum|mean of W x_u: project the fewer rows
                        # (e.g. a race's vector once, not once per result row it reaches)
                        msg = (x_src @ sage.lin_l.weight.T).index_select(0, src_idx)
                        projected = projected + scatter(msg, dst_idx, dim=0, dim_size=n_dst, reduce=self.aggr)
                    else:
                        feats.append(scatter(x_src.index_select(0, src_idx), dst_idx, dim=0,
                                             dim_size=n_dst, reduce=self.aggr))
                        weights.append(sage.lin_l.weight)
                out[dst] = F.linear(torch.cat(feats, dim=1), torch.cat([w_root] + weights, dim=1), bias) + projected
            x_dict = {t: norm_dict[t](out[t] if t in out else _take(x, layer.root[t])).relu()
                      for t, x in x_dict.items()}
        return {t: _take(x, plan.out[t]) for t, x in x_dict.items()}

    def forward_reference(self, x_dict: dict[str, Tensor],
                          edge_index_dict: dict[EdgeType, Tensor]) -> dict[str, Tensor]:
        """The unfused ``HeteroConv`` computation :meth:`forward` must equal (for tests)."""
        for conv, norm_dict in zip(self.convs, self.norms):
            out = conv(x_dict, edge_index_dict)
            x_dict = {t: norm_dict[t](out.get(t, x)).relu() for t, x in x_dict.items()}
        return x_dict


def _select(x: Tensor, index: Tensor | None) -> Tensor:
    return x if index is None else x.index_select(0, index)


def _take(x: Tensor | FactoredRows, rows: Tensor | int) -> Tensor:
    """``rows`` of ``x``: an index, or a count of first rows (a view, no copy)."""
    if isinstance(x, FactoredRows):
        return x.take(rows)
    return x[:rows] if isinstance(rows, int) else x.index_select(0, rows)


class RDLBackbone(torch.nn.Module):
    """Table models + temporal encoder + heterogeneous GraphSAGE; one embedding per node.

    Args:
        config: hyper-parameters (:class:`BackboneConfig`).
        graph_meta: node/edge types, columns and column statistics
            (:meth:`GraphMeta.from_graph`).

    ``forward(batch)`` takes a mini-batch ``HeteroData`` with ``batch[t].tf`` for
    every node type, ``batch[et].edge_index`` (local indices) for the edge types, and
    optionally ``batch[t].time`` + ``batch[t].seed_time`` (temporal batches), and
    returns ``{node_type: Tensor[num_nodes, channels]}`` for every node type of the
    batch, including empty ones. In temporal batches only the seeds' rows are computed
    through to the last layer, and identical computations only once (:meth:`plan`).
    """

    def __init__(self, config: BackboneConfig, graph_meta: GraphMeta):
        super().__init__()
        self.config = config
        self.graph_meta = graph_meta
        self.channels = config.channels
        self.node_types = list(graph_meta.node_types)
        self.edge_types = [tuple(et) for et in graph_meta.edge_types]
        self.time_node_types = list(graph_meta.time_node_types)
        self._edge_type_set = set(self.edge_types)
        # Exact either way (relcore.models.plan); off only to measure or test what it saves.
        self.share = True

        self.table_models = torch.nn.ModuleDict({
            t: make_table_model(config.table_model, config.channels, graph_meta.col_names_dict[t],
                                graph_meta.col_stats[t], resnet_layers=config.resnet_layers,
                                dropout=config.dropout)
            for t in self.node_types
        })
        self.temporal = (RelativeTimeEncoder(self.time_node_types, config.channels)
                         if config.temporal and self.time_node_types else None)
        self.gnn = HeteroSAGE(self.node_types, self.edge_types, config.channels,
                              aggr=config.aggr, num_layers=config.layers)

    def reset_parameters(self) -> None:
        for m in self.table_models.values():
            m.reset_parameters()
        if self.temporal is not None:
            self.temporal.reset_parameters()
        self.gnn.reset_parameters()

    def encode_rows(self, batch: HeteroData, row_cache: dict[str, Tensor] | None = None,
                    factored: bool = False,
                    nodes: dict[str, Tensor | None] | None = None,
                    min_repeats: float | None = None) -> dict[str, Tensor | FactoredRows]:
        """Stages 1-2 (+ temporal encoding): ``{node_type: [num_nodes, d]}`` before message passing.

        A batch whose ``tf`` holds each distinct row once carries ``row_index``
        (node -> tf row): rows reached from many seeds are encoded once.
        ``row_cache`` (a frozen backbone's :meth:`encode_table` outputs for whole
        tables) replaces the table models by a look-up by ``n_id``. With ``factored``
        the vectors of node types that repeat their look-ups at least ``min_repeats``
        (default ``FACTOR_MIN_REPEATS``) times stay look-ups
        (:class:`~relcore.models.factored.FactoredRows`). ``nodes[t]`` keeps those nodes
        only, in that order (``None``: all).
        """
        device = next(self.parameters()).device
        nodes = nodes or {}
        min_repeats = FACTOR_MIN_REPEATS if min_repeats is None else min_repeats
        rows: dict[str, tuple[Tensor, Tensor | None]] = {}  # table output, node -> its row
        for t in batch.node_types:
            store = batch[t]
            if "tf" not in store:
                continue
            keep = nodes.get(t)
            if row_cache is not None and t in row_cache:
                rows[t] = (row_cache[t], _select(store.n_id, keep))
                continue
            tf = store.tf
            if len(tf) == 0:
                # Several stype encoders (EmbeddingBag, einsum) reject 0 rows; nothing to encode anyway.
                x = torch.zeros(0, self.channels, device=device)
            else:
                x = self.table_models[t](tf)
            rows[t] = (x, _select(store.row_index, keep) if "row_index" in store else keep)

        times: dict[str, tuple[Tensor, Tensor]] = {}
        if self.temporal is not None:
            timed = [t for t in self.time_node_types
                     if t in rows and "seed_time" in batch[t] and "time" in batch[t]]
            if timed:
                times = self.temporal.factors({t: _select(batch[t].seed_time, nodes.get(t)) for t in timed},
                                              {t: _select(batch[t].time, nodes.get(t)) for t in timed})
        x_dict: dict[str, Tensor | FactoredRows] = {}
        for t, (x, row_of) in rows.items():
            num_lookups = x.size(0) + (times[t][0].size(0) if t in times else 0)
            if factored and row_of is not None and row_of.numel() >= min_repeats * num_lookups:
                x_dict[t] = FactoredRows(x, row_of, *times.get(t, (None, None)))
                continue
            x = x.index_select(0, row_of) if row_of is not None else x
            if t in times:
                encoded, node_to_delta = times[t]
                x = x + encoded.index_select(0, node_to_delta)
            x_dict[t] = x
        return x_dict

    @torch.no_grad()
    def encode_tables(self, data: HeteroData, chunk: int = 65_536) -> dict[str, Tensor]:
        """Table-model outputs for every row of every table of a graph.

        A frozen backbone (regime P, eval mode) maps a row to the same vector in
        every batch, so fine-tuning encodes each table once and looks rows up.
        """
        device = next(self.parameters()).device
        out: dict[str, Tensor] = {}
        for t in self.node_types:
            tf = data[t].tf  # the graph stays where it is; chunks travel to the model
            parts = [self.table_models[t](tf[lo: lo + chunk].to(device)) for lo in range(0, len(tf), chunk)]
            out[t] = torch.cat(parts) if parts else torch.zeros(0, self.channels, device=device)
        return out

    def plan(self, batch: HeteroData) -> Plan:
        """How message passing runs on ``batch`` (:mod:`relcore.models.plan`): in temporal
        batches laid out hop by hop, trimmed, and shared across identical computations
        unless :attr:`share` is off; over every node otherwise."""
        return self._plan(batch, *self._layout(batch))

    def _plan(self, batch: HeteroData, edges, hops) -> Plan:
        types = [t for t in batch.node_types if "tf" in batch[t]]
        layers = self.config.layers
        if hops is None:
            return full_plan({t: batch[t].num_nodes for t in types}, edges, layers)
        nodes, edge_hops = hops
        if self.share and all("seed_time" in batch[t] for t in types):
            return shared_plan({t: batch[t].n_id for t in types}, {t: batch[t].seed_time for t in types},
                               nodes, edge_hops, edges, layers)
        return trimmed_plan(nodes, edge_hops, edges, layers)

    def _layout(self, batch: HeteroData):
        """The batch's edges the GNN reads, and its hop layout (``None`` when it has none)."""
        types = [t for t in batch.node_types if "tf" in batch[t]]
        edges = {et: batch[et].edge_index for et in batch.edge_types
                 if et in self._edge_type_set and "edge_index" in batch[et] and et[0] in types and et[2] in types}
        if not (all("num_sampled_nodes" in batch[t] for t in types)
                and all("num_sampled_edges" in batch[et] for et in edges)):
            return edges, None
        return edges, ({t: batch[t].num_sampled_nodes for t in types},
                       {et: batch[et].num_sampled_edges for et in edges})

    def forward(self, batch: HeteroData, row_cache: dict[str, Tensor] | None = None) -> dict[str, Tensor]:
        edges, hops = self._layout(batch)
        plan = self._plan(batch, edges, hops)
        # Temporal batches repeat rows and time differences: the first layer reads its
        # inputs as look-ups (relcore.models.factored). A shared plan's inputs are each
        # read at least once by an edge, so its look-ups always beat materialising them.
        temporal = hops is not None
        shared = any(nodes is not None for nodes in plan.inputs.values())
        x_dict = self.encode_rows(batch, row_cache, factored=temporal, nodes=plan.inputs,
                                  min_repeats=0 if shared else FACTOR_MIN_REPEATS)
        return self.gnn(x_dict, plan)
