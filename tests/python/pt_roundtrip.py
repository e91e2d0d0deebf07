#!/usr/bin/python3
"""Test helper: reads DIR/cpp.pt (written by flowmatch's save_pt) with torch.load, writes
DIR/python.pt = 3 * that tensor with torch.save, DIR/dict.pt holding a dict (not a tensor), and
DIR/nested.pt holding a Linear(4, 2)'s state_dict and the tensor under "points"."""
import os
import sys

import torch

folder = sys.argv[1]
x = torch.load(os.path.join(folder, "cpp.pt"))
assert isinstance(x, torch.Tensor) and x.dtype == torch.float64 and tuple(x.shape) == (3, 4), (type(x), x)
torch.save(3 * x, os.path.join(folder, "python.pt"))
torch.save({"a": x}, os.path.join(folder, "dict.pt"))
# A checkpoint as ref_likelihood_2d.py writes one: a state_dict (an OrderedDict) and points.
layer = torch.nn.Linear(4, 2).double()
with torch.no_grad():
    layer.weight.copy_(torch.arange(8, dtype=torch.float64).reshape(2, 4))
    layer.bias.copy_(torch.tensor([-1.0, 1.0], dtype=torch.float64))
torch.save({"state_dict": layer.state_dict(), "points": x}, os.path.join(folder, "nested.pt"))
