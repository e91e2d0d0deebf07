#!/usr/bin/python3
"""Test fixture (run by the C++ tests with Debian's python3-torch): scripts a small velocity MLP,
saves it with torch.jit.save, and integrates it with a plain-PyTorch Euler loop from fixed noise, so the
C++ side can check that it samples the same points. Also saves a model with the wrong signature.
Usage: make_torchscript_fixture.py DIR"""
import os
import sys

import numpy as np
import torch


class Velocity(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.net = torch.nn.Sequential(torch.nn.Linear(3, 32), torch.nn.SELU(), torch.nn.Linear(32, 32),
                                       torch.nn.SELU(), torch.nn.Linear(32, 2))

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat([x, t.unsqueeze(1)], dim=1))


class FailsAtRunTime(torch.nn.Module):
    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return x @ torch.ones(3, 3)  # x is (B, 2): the interpreter raises


class WrongSignature(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


out = sys.argv[1]
torch.manual_seed(0)
model = torch.jit.script(Velocity())
model.save(os.path.join(out, "velocity.pt"))
torch.jit.script(WrongSignature()).save(os.path.join(out, "wrong.pt"))
torch.jit.script(FailsAtRunTime()).save(os.path.join(out, "fails.pt"))
x = torch.randn(500, 2, generator=torch.Generator().manual_seed(1))
np.save(os.path.join(out, "x0.npy"), x.numpy())
steps = 50
with torch.no_grad():
    for k in range(steps):
        t = torch.full((x.shape[0],), k / steps)
        x = x + (1.0 / steps) * model(x, t)
np.save(os.path.join(out, "python_euler.npy"), x.numpy())

# The same archive claiming a format version from the future, as a newer PyTorch would write it.
import zipfile

with zipfile.ZipFile(os.path.join(out, "velocity.pt")) as zin, \
        zipfile.ZipFile(os.path.join(out, "newer.pt"), "w", compression=zipfile.ZIP_STORED) as zout:
    for item in zin.infolist():
        data = zin.read(item.filename)
        if item.filename.endswith("/version") or item.filename == "version":
            data = b"99\n"
        zout.writestr(item, data)
