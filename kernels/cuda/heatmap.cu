// Heatmap peak extraction (CenterNet decode.py _nms): a value is kept where it equals the
// maximum of its kernel x kernel window (stride 1, -inf padding), otherwise it becomes
// heat * 0. The window maximum propagates NaN as torch's max_pool2d does (a NaN suppresses
// its neighbourhood and stays NaN itself). Same values as kernels::ops::heatmap::heatmap_nms;
// the top-k that follows runs on the host.
//
// heatmap_candidates compacts the flat indices of suppressed values >= threshold (or NaN)
// with an atomic counter; their order is unspecified, the host sorts them.

VP_DEVICE float vp_pool_max(float a, float b) { return (b > a || vp_isnan(b)) ? b : a; }

// heat, out: [c, h, w]; `radius` = kernel / 2.
extern "C" __global__ void __launch_bounds__(VP_THREADS)
    heatmap_nms(const float* __restrict__ heat, int c, int h, int w, int radius,
                float* __restrict__ out) {
  const long long plane = (long long)h * w;
  const long long total = (long long)c * plane;
  for (long long idx = vp_global_index(); idx < total; idx += vp_grid_stride()) {
    const long long ch = idx / plane;
    const long long rem = idx - ch * plane;
    const int y = (int)(rem / w);
    const int x = (int)(rem - (long long)y * w);
    const float* p = heat + ch * plane;
    const int ylo = y - radius < 0 ? 0 : y - radius;
    const int yhi = vp_min_i(y + radius, h - 1);
    const int xlo = x - radius < 0 ? 0 : x - radius;
    const int xhi = vp_min_i(x + radius, w - 1);
    float m = vp_neg_inf();
    for (int yy = ylo; yy <= yhi; ++yy) {
      for (int xx = xlo; xx <= xhi; ++xx) m = vp_pool_max(m, __ldg(p + (long long)yy * w + xx));
    }
    const float v = p[rem];
    out[idx] = v * ((m == v) ? 1.0f : 0.0f);
  }
}

// sup: [total] suppressed heatmap; count: [1] (zero-initialised); idx: [cap].
extern "C" __global__ void __launch_bounds__(VP_THREADS)
    heatmap_candidates(const float* __restrict__ sup, long long total, float threshold,
                       int* __restrict__ count, long long* __restrict__ idx, int cap) {
  for (long long i = vp_global_index(); i < total; i += vp_grid_stride()) {
    const float v = sup[i];
    if (v >= threshold || vp_isnan(v)) {
      const int slot = atomicAdd(count, 1);
      if (slot < cap) idx[slot] = i;
    }
  }
}
