#!/usr/bin/python3
"""Writes the .npy fixtures of tests/test_npy.cpp with NumPy itself (run once; output checked in)."""
import numpy as np

np.save("numpy_f32_v1.npy", np.arange(6, dtype=np.float32).reshape(3, 2) / 4)
np.save("numpy_f64_v1.npy", np.array([[1.5, -2.25, 3.0]], dtype=np.float64))
np.save("numpy_i64_1d.npy", np.array([7, -8, 9], dtype=np.int64))
np.save("numpy_f32_fortran.npy", np.asfortranarray(np.arange(6, dtype=np.float32).reshape(2, 3)))
np.save("numpy_f64_scalar.npy", np.float64(2.5))
with open("numpy_f32_v2.npy", "wb") as f:
    np.lib.format.write_array(f, np.arange(4, dtype=np.float32).reshape(2, 2), version=(2, 0))
np.save("numpy_big_endian.npy", np.arange(3, dtype=">f4"))
