#pragma once
/// \file
/// SELU applied in place, the activation of the TorchCFM-style MLPs. ATen's SELU evaluates its
/// exponential (SLEEF, 1 ulp) on every element; at batch 10 000 that was as much time as the matrix
/// products of the 3×64 MLP. This one evaluates exp with a degree-6 polynomial after Cody–Waite range
/// reduction (Cephes' expf, within a few float ulps of ATen), 8 floats at a time with AVX2 and FMA,
/// chosen at run time. Other dtypes, devices, layouts or processors fall back to at::selu_.

#include <ATen/Tensor.h>

namespace flowmatch::models {

/// SELU(x) = λx for x > 0, λα(eˣ − 1) otherwise (λ ≈ 1.0507, α ≈ 1.6733), in place; NaN stays NaN.
/// Returns `x`.
at::Tensor& selu_in_place(at::Tensor& x);

/// x ← SELU(x + bias) for x of shape (rows, cols) and bias (cols), in one pass over x when
/// vectorised (cols a multiple of 8), else an add then selu_in_place. Returns `x`.
at::Tensor& selu_in_place(at::Tensor& x, const at::Tensor& bias);

/// out ← SELU(x · weightᵀ + bias) (a linear layer and its activation; x (rows, k), weight (cols, k),
/// bias (cols), out (rows, cols)). For a narrow x (k ≤ 8, e.g. the data coordinates entering an
/// MLP) and cols a multiple of 8, one vectorised pass computes it all; otherwise a product and
/// selu_in_place(out, bias). Not for autograd (no graph is recorded).
void selu_of_linear(at::Tensor& out, const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias);

/// out ← SELU(x + bias) · weightᵀ + out_bias (an activation and a narrow linear layer after it; x
/// (rows, cols), bias (cols), weight (k, cols), out_bias (k), out (rows, k)); x is not changed. For
/// k ≤ 8 (e.g. an MLP's output layer back to the data coordinates) and cols a multiple of 8, one
/// vectorised pass whose activations never leave registers; otherwise a copy, selu_in_place and a product.
void linear_of_selu(at::Tensor& out, const at::Tensor& x, const at::Tensor& bias, const at::Tensor& weight,
                    const at::Tensor& out_bias);

/// True when selu_in_place uses its own vectorised loop for contiguous float32 CPU tensors here.
bool selu_vectorized();

}  // namespace flowmatch::models
