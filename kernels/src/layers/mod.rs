//! CPU layers (convolution on a fast GEMM, linear, norms, activations, pooling, resize, tensor shape ops) and image pre-processing.
