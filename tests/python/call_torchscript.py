#!/usr/bin/python3
"""Test helper: loads a TorchScript velocity model with torch.jit.load and evaluates it on x.npy, t.npy
from DIR, writing DIR/python_v.npy. Usage: call_torchscript.py MODEL DIR"""
import os
import sys

import numpy as np
import torch

model = torch.jit.load(sys.argv[1])
folder = sys.argv[2]
x = torch.from_numpy(np.load(os.path.join(folder, "x.npy")))
t = torch.from_numpy(np.load(os.path.join(folder, "t.npy")))
with torch.no_grad():
    np.save(os.path.join(folder, "python_v.npy"), model(x, t).numpy())
