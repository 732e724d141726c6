"""fusedrnn: fused-kernel LSTM / GRU / Elman RNN layers for PyTorch, drop-in replacements for torch.nn's."""

from .cells import GRUCell, LSTMCell, RNNCell
from .modules import GRU, LSTM, RNN
from .quantization import quantize_dynamic
from .registry import BackendError, available_backends, get_backend
from .replace import replace_rnns, restore_rnns

__version__ = "0.1.0"
__all__ = [
    "LSTM",
    "GRU",
    "RNN",
    "LSTMCell",
    "GRUCell",
    "RNNCell",
    "replace_rnns",
    "restore_rnns",
    "quantize_dynamic",
    "available_backends",
    "get_backend",
    "BackendError",
]
