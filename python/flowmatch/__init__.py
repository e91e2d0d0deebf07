"""flowmatch: flow matching in C++ (LibTorch), from Python.

Couplings and optimal transport, conditional paths with their schedulers and prediction-target
conversions, ODE solvers and likelihoods (exact or Hutchinson divergence), manifolds, discrete
flow matching, and the `Run` folders that the `flowmatch` command line writes. The nouns follow
Meta's flow_matching: `CondOTScheduler`, `AffineProbPath(...).sample(x_0, x_1, t)`,
`ODESolver(model).sample(...)` and `.compute_likelihood(...)`, `ScheduleTransformedModel`.
The work is done by the C++ library (the compiled `flowmatch._core`); tensors are torch tensors.
"""
import torch as _torch  # noqa: F401  (the compiled module converts through PyTorch's tensor types)

from ._core import *  # noqa: F401,F403
from ._core import __doc__ as _core_doc  # noqa: F401

__version__ = "0.1.0"
