r"""Task head: a one-hidden-layer MLP on a node embedding.

.. math::
    \hat{y}_v = \mathbf{w}_2^\top\, \mathrm{ReLU}\big(\mathrm{BN}(\mathbf{W}_1 \mathbf{h}_v + \mathbf{b}_1)\big) + b_2
"""

from __future__ import annotations

import torch
from torch import Tensor


class MLPHead(torch.nn.Module):
    """``Linear(in, hidden) -> BatchNorm1d -> ReLU -> Linear(hidden, out)``.

    BatchNorm1d needs more than one row per batch in training mode (torch's rule).
    """

    def __init__(self, in_channels: int = 128, hidden_channels: int = 128, out_channels: int = 1):
        super().__init__()
        self.lin1 = torch.nn.Linear(in_channels, hidden_channels)
        self.norm = torch.nn.BatchNorm1d(hidden_channels)
        self.lin2 = torch.nn.Linear(hidden_channels, out_channels)

    def reset_parameters(self) -> None:
        self.lin1.reset_parameters()
        self.norm.reset_parameters()
        self.lin2.reset_parameters()

    def forward(self, x: Tensor) -> Tensor:
        return self.lin2(self.norm(self.lin1(x)).relu())
