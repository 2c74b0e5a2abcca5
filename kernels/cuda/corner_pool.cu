// CornerNet's corner pooling on the GPU, the same scans as kernels::ops::corner_pool: one
// thread per line (a column of a plane for Top and Bottom, a row for Left and Right) runs the
// running maximum along it with vp_nan_max (torch.maximum: NaN wins).

// x, y: [planes, h, w]; direction: 0 Top (max over the rows at or below), 1 Left (columns at
// or to the right), 2 Bottom (rows at or above), 3 Right (columns at or to the left).
extern "C" __global__ void __launch_bounds__(VP_THREADS)
    corner_pool(const float* __restrict__ x, long long planes, int h, int w, int direction,
                float* __restrict__ y) {
  const bool vertical = direction == 0 || direction == 2;
  const long long per_plane = vertical ? w : h;
  const long long lines = planes * per_plane;
  for (long long idx = vp_global_index(); idx < lines; idx += vp_grid_stride()) {
    const long long p = idx / per_plane;
    const long long line = idx - p * per_plane;
    const float* src = x + p * h * w;
    float* dst = y + p * h * w;
    // Element k along the line, in scan order, is at base + k * step.
    const int n = vertical ? h : w;
    long long base, step;
    if (vertical) {
      step = direction == 0 ? -(long long)w : (long long)w;
      base = direction == 0 ? (long long)(h - 1) * w + line : line;
    } else {
      step = direction == 1 ? -1 : 1;
      base = direction == 1 ? line * w + (w - 1) : line * w;
    }
    if (n == 0) {
      continue;
    }
    float run = src[base];
    dst[base] = run;
    for (int k = 1; k < n; ++k) {
      const long long at = base + k * step;
      run = vp_nan_max(src[at], run);
      dst[at] = run;
    }
  }
}
