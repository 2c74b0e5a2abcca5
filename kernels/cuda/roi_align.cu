// RoIAlign forward with torchvision's semantics (csrc/ops/cpu/roi_align_kernel.cpp and
// roi_align_common.h), one thread per output value [k, c, ph, pw].
//
// - roi_start = x1 * spatial_scale - offset, offset = 0.5 when aligned; the RoI size is clamped
//   to at least 1 only when not aligned;
// - grid = sampling_ratio when > 0, else ceil(roi_size / pooled) per RoI (adaptive);
// - a sample outside [-1, H] x [-1, W] has weight 0 but still counts in the average;
//   coordinates in [-1, 0] clamp to 0, samples past the last row/column use it.
//
// The sums run in the order of kernels::ops::roi_align::roi_align_reference (samples row by
// row, w1*v1 + w2*v2 + w3*v3 + w4*v4 added to the running sum), so with --fmad=false the
// result is bit-identical to the CPU reference. An out-of-range sample reads taps at index 0
// with weight 0, as torchvision's CPU kernel (so a NaN at [0, 0] propagates as on the CPU).
//
// The host (kernels/src/cuda/ops.rs) validates every RoI first with the CPU op's own checks:
// batch index in range, at most MAX_SAMPLES_PER_BIN samples per bin.

VP_DEVICE int vp_roi_grid(float size, int pooled, int sampling_ratio) {
  if (sampling_ratio > 0) return sampling_ratio;
  const float g = ceilf(size / (float)pooled);
  // NaN RoI, degenerate or inverted aligned RoI: no samples (zeros), as on the CPU.
  if (!(g > 0.0f)) return 0;
  // The host rejects grids above 2^24 samples per bin; this only keeps the cast defined.
  if (g > 16777216.0f) return 16777216;
  return (int)g;
}

// input: [N, C, H, W]; rois: [K, 5] (batch, x1, y1, x2, y2); out: [K, C, pooled_h, pooled_w].
extern "C" __global__ void __launch_bounds__(VP_THREADS)
    roi_align_forward(const float* __restrict__ input, const float* __restrict__ rois, int num_rois,
                      int channels, int height, int width, int pooled_h, int pooled_w,
                      float spatial_scale, int sampling_ratio, int aligned,
                      float* __restrict__ out) {
  const long long total = (long long)num_rois * channels * pooled_h * pooled_w;
  for (long long idx = vp_global_index(); idx < total; idx += vp_grid_stride()) {
    const int pw = (int)(idx % pooled_w);
    const int ph = (int)((idx / pooled_w) % pooled_h);
    const int c = (int)((idx / ((long long)pooled_w * pooled_h)) % channels);
    const int k = (int)(idx / ((long long)pooled_w * pooled_h * channels));

    const float* roi = rois + (long long)k * 5;
    const int batch = (int)roi[0];
    const float offset = aligned ? 0.5f : 0.0f;
    const float start_w = roi[1] * spatial_scale - offset;
    const float start_h = roi[2] * spatial_scale - offset;
    const float end_w = roi[3] * spatial_scale - offset;
    const float end_h = roi[4] * spatial_scale - offset;
    float roi_w = end_w - start_w;
    float roi_h = end_h - start_h;
    if (!aligned) {
      // std::max(roi_width, 1.f): keeps NaN.
      if (roi_w < 1.0f) roi_w = 1.0f;
      if (roi_h < 1.0f) roi_h = 1.0f;
    }
    const float bin_h = roi_h / (float)pooled_h;
    const float bin_w = roi_w / (float)pooled_w;
    const int grid_h = vp_roi_grid(roi_h, pooled_h, sampling_ratio);
    const int grid_w = vp_roi_grid(roi_w, pooled_w, sampling_ratio);
    long long count = (long long)grid_h * (long long)grid_w;
    if (count < 1) count = 1;

    const float* plane = input + ((long long)batch * channels + c) * (long long)height * width;
    const float hf = (float)height;
    const float wf = (float)width;
    float acc = 0.0f;
    for (int iy = 0; iy < grid_h; ++iy) {
      const float yy = start_h + (float)ph * bin_h + ((float)iy + 0.5f) * bin_h / (float)grid_h;
      for (int ix = 0; ix < grid_w; ++ix) {
        const float xx = start_w + (float)pw * bin_w + ((float)ix + 0.5f) * bin_w / (float)grid_w;
        long long p1 = 0, p2 = 0, p3 = 0, p4 = 0;
        float w1 = 0.0f, w2 = 0.0f, w3 = 0.0f, w4 = 0.0f;
        if (yy >= -1.0f && yy <= hf && xx >= -1.0f && xx <= wf) {
          float y = (yy <= 0.0f) ? 0.0f : yy;
          float x = (xx <= 0.0f) ? 0.0f : xx;
          int y_low = (int)y;
          int x_low = (int)x;
          int y_high, x_high;
          if (y_low >= height - 1) {
            y_high = y_low = height - 1;
            y = (float)y_low;
          } else {
            y_high = y_low + 1;
          }
          if (x_low >= width - 1) {
            x_high = x_low = width - 1;
            x = (float)x_low;
          } else {
            x_high = x_low + 1;
          }
          const float ly = y - (float)y_low;
          const float lx = x - (float)x_low;
          const float hy = 1.0f - ly;
          const float hx = 1.0f - lx;
          p1 = (long long)y_low * width + x_low;
          p2 = (long long)y_low * width + x_high;
          p3 = (long long)y_high * width + x_low;
          p4 = (long long)y_high * width + x_high;
          w1 = hy * hx;
          w2 = hy * lx;
          w3 = ly * hx;
          w4 = ly * lx;
        }
        acc += w1 * __ldg(plane + p1) + w2 * __ldg(plane + p2) + w3 * __ldg(plane + p3) +
               w4 * __ldg(plane + p4);
      }
    }
    out[idx] = acc / (float)count;
  }
}
