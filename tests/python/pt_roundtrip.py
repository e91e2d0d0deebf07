#!/usr/bin/python3
"""Test helper: reads DIR/cpp.pt (written by flowmatch's save_pt) with torch.load, writes
DIR/python.pt = 3 * that tensor with torch.save, and DIR/dict.pt holding a dict (not a tensor)."""
import os
import sys

import torch

folder = sys.argv[1]
x = torch.load(os.path.join(folder, "cpp.pt"))
assert isinstance(x, torch.Tensor) and x.dtype == torch.float64 and tuple(x.shape) == (3, 4), (type(x), x)
torch.save(3 * x, os.path.join(folder, "python.pt"))
torch.save({"a": x}, os.path.join(folder, "dict.pt"))
