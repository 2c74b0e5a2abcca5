//! CUDA backend: kernels in kernels/cuda/*.cu compiled at run time by NVRTC and launched through cudarc.
