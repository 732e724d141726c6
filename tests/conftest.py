"""Test session set-up shared by every test file."""

import os

import torch

# Without a GPU the Triton kernels run under Triton's interpreter on CPU tensors. The variable is read when triton
# is imported, so it must be set here, before any test module imports fusedrnn's Triton backend.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
