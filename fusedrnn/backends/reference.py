"""Backend `reference`: the plain-PyTorch oracle, a Python loop over time. Slow, exact, runs everywhere."""

from __future__ import annotations

from .. import reference, reference_slstm
from ..registry import LayerBackend


class ReferenceBackend(LayerBackend):
    name = "reference"
    summary = "plain PyTorch loop over time (the oracle); any device, any dtype, autograd for gradients"

    def preference(self, call) -> int:
        return 1  # the last resort of `auto`: always correct, never fast

    def layer(self, mode, x, hx, cx, w, reverse, lengths, *, zoneout=None):
        return reference.rnn_layer(mode, x, hx, cx, w.w_ih, w.w_hh, w.b_ih, w.b_hh, w.w_hr, reverse=reverse,
                                   lengths=lengths, norm=w.norm, zoneout=zoneout)  # fmt: skip

    def slstm_layer(self, x, state, w, reverse, lengths, formulation):
        return reference_slstm.slstm_layer(x, state, w.w_ih, w.w_hh, w.b_ih, w.b_hh, reverse, lengths,
                                           formulation=formulation)  # fmt: skip


BACKEND = ReferenceBackend()
