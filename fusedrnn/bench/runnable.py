"""What a row of the table is: a `RowSpec` that builds, from the baseline module's weights, a `Runnable`.

Kept apart from the row lists (rows.py for torch.nn's cells, variant_models.py for the variants) so that the peer
adapters, the row lists and the runner all import it from below and none of them imports another in a circle.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from torch import Tensor, nn

from .configs import BenchConfig


@dataclasses.dataclass
class Runnable:
    """forward(x [T,N,I], h0 [L*D,N,P], c0 [L*D,N,H] or None) -> [y, h_n, c_n?]; params by torch name."""

    forward: Callable[[Tensor, Tensor, Tensor | None], list[Tensor]]
    params: dict[str, Tensor]


@dataclasses.dataclass(frozen=True)
class RowSpec:
    name: str
    summary: str
    build: Callable[[BenchConfig, nn.Module], Runnable]
    unavailable: str | None = None  # why this row cannot run on this machine at all (shown as a note)
    #: Built with torch.compile: the runner gives Dynamo fresh caches before building a config's rows. (Modules of
    #: one class share their forward's code object, so Dynamo's per-code cache, 8 entries by default, would fill up
    #: over a sweep and silently fall back to eager.)
    compiles: bool = False
    #: Seconds the row's first call (where torch.compile compiles) may take before the row is given up as too slow
    #: to build; None: no limit.
    first_call_limit_s: float | None = None


class Unsupported(Exception):
    """This row cannot run this configuration; the message says why (shown in the table, not an error)."""


def module_runnable(module: nn.Module) -> Runnable:
    """Wrap a torch.nn-compatible module (torch.nn, fusedrnn, or a compiled one) as a Runnable."""

    def forward(x, h0, c0):
        y, hidden = module(x, h0 if c0 is None else (h0, c0))
        return [y, *hidden] if isinstance(hidden, tuple) else [y, hidden]

    params = dict(module.named_parameters())
    return Runnable(forward, params)
