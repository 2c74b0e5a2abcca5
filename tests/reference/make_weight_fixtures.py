"""Writes the small weight files that kernels::weights is tested on (needs torch, safetensors).

Run from the repository root: python3 tests/reference/make_weight_fixtures.py
The same state dict is saved in every container torch.save writes, and as safetensors.
"""
import os

import torch
from safetensors.torch import save_file

out = os.path.join("kernels", "tests", "fixtures", "weights")
os.makedirs(out, exist_ok=True)

state = {
    "conv.weight": torch.arange(6, dtype=torch.float32).reshape(2, 3, 1, 1) * 0.5,
    "half": torch.tensor([0.25, -2.0], dtype=torch.float16),
    "bn.num_batches_tracked": torch.tensor(7, dtype=torch.int64).reshape(1),
    # A non-contiguous view: readers must give its logical (row-major) order.
    "transposed": torch.arange(6, dtype=torch.float32).reshape(2, 3).t(),
}
torch.save(state, os.path.join(out, "tiny.pth"))
torch.save(state, os.path.join(out, "tiny_legacy.pth"), _use_new_zipfile_serialization=False)
torch.save({"state_dict": state, "epoch": 3}, os.path.join(out, "tiny_nested.pth"))
save_file({k: v.contiguous() for k, v in state.items()}, os.path.join(out, "tiny.safetensors"))
print("wrote", sorted(os.listdir(out)))
