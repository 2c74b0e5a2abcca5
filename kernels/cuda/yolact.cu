// YOLACT mask assembly (dbolya/yolact layers/output_utils.py): mask i = sigmoid(P . C[i]),
// then, when `crop` is set, zeroed outside its box padded by one prototype pixel
// (layers/box_utils.py crop with sanitize_coordinates(padding=1, cast=False)), as
// kernels::ops::yolact::assemble_masks_reference computes it (dot product summed in prototype
// order, so it is bit-identical to the reference up to expf).
//
// Each block handles 256 pixels of one mask at a time; the mask's coefficients are staged in
// shared memory in chunks of 256 (two barriers per chunk, reached by every thread of the block).

#define VP_YOLACT_THREADS 256

// Column/row range kept by crop: (clamp(min(a, b) * size - pad, min 0),
// clamp(max(a, b) * size + pad, max size)).
VP_DEVICE void vp_sanitize(float a, float b, int size, float pad, float* lo, float* hi) {
  const float s = (float)size;
  const float sa = a * s;
  const float sb = b * s;
  *lo = vp_clamp_min(vp_nan_min(sa, sb) - pad, 0.0f);
  *hi = vp_clamp_max(vp_nan_max(sa, sb) + pad, s);
}

// proto: [h, w, k]; coeffs: [n, k]; boxes: [n, 4] relative; out: [n, h, w].
// Launch: grid (pixel blocks, min(n, 65535)), block (256).
extern "C" __global__ void __launch_bounds__(VP_YOLACT_THREADS)
    yolact_assemble(const float* __restrict__ proto, const float* __restrict__ coeffs,
                    const float* __restrict__ boxes, int n, int h, int w, int k, int crop,
                    float* __restrict__ out) {
  __shared__ float coef[VP_YOLACT_THREADS];
  const long long hw = (long long)h * w;
  const int t = (int)threadIdx.x;
  for (int i = (int)blockIdx.y; i < n; i += (int)gridDim.y) {
    float x1 = vp_neg_inf(), x2 = -vp_neg_inf(), y1 = vp_neg_inf(), y2 = -vp_neg_inf();
    if (crop) {
      const float* b = boxes + (long long)i * 4;
      vp_sanitize(b[0], b[2], w, 1.0f, &x1, &x2);
      vp_sanitize(b[1], b[3], h, 1.0f, &y1, &y2);
    }
    // Every thread runs the same number of iterations of both loops (barriers inside).
    for (long long base = (long long)blockIdx.x * VP_YOLACT_THREADS; base < hw;
         base += (long long)gridDim.x * VP_YOLACT_THREADS) {
      const long long p = base + t;
      float s = 0.0f;
      for (int j0 = 0; j0 < k; j0 += VP_YOLACT_THREADS) {
        __syncthreads();  // the previous chunk is no longer read
        if (j0 + t < k) coef[t] = coeffs[(long long)i * k + j0 + t];
        __syncthreads();  // the chunk is loaded
        if (p < hw) {
          const float* pp = proto + p * k + j0;
          const int m = vp_min_i(VP_YOLACT_THREADS, k - j0);
          for (int j = 0; j < m; ++j) s += __ldg(pp + j) * coef[j];
        }
      }
      if (p < hw) {
        const float yf = (float)(p / w);
        const float xf = (float)(p % w);
        const bool keep = xf >= x1 && xf < x2 && yf >= y1 && yf < y2;
        const float sig = 1.0f / (1.0f + expf(-s));
        out[(long long)i * hw + p] = sig * (keep ? 1.0f : 0.0f);
      }
    }
  }
}
