// Deformable convolution on the GPU: a deformable im2col kernel, then the cuBLAS SGEMM and
// bias_activation of conv.cu, the same computation as kernels::layers::DeformConv2d
// (torchvision.ops.deform_conv2d's semantics; the layouts are documented there).

// torchvision's bilinear_interpolate of deform_conv2d_kernel.cpp: zero outside
// (-1, h) x (-1, w), and zero for each corner outside the image. A NaN position gives NaN,
// as the CPU layer does (torch's float-to-int conversion of NaN is undefined).
VP_DEVICE float vp_deform_sample(const float* __restrict__ plane, int h, int w, float y,
                                 float x) {
  if (vp_isnan(y) || vp_isnan(x)) {
    return vp_nan();
  }
  if (y <= -1.0f || (float)h <= y || x <= -1.0f || (float)w <= x) {
    return 0.0f;
  }
  const int y_low = (int)floorf(y);
  const int x_low = (int)floorf(x);
  const int y_high = y_low + 1;
  const int x_high = x_low + 1;
  const float ly = y - (float)y_low;
  const float lx = x - (float)x_low;
  const float hy = 1.0f - ly;
  const float hx = 1.0f - lx;
  const bool top = y_low >= 0, bottom = y_high < h, left = x_low >= 0, right = x_high < w;
  const float v1 = (top && left) ? plane[(long long)y_low * w + x_low] : 0.0f;
  const float v2 = (top && right) ? plane[(long long)y_low * w + x_high] : 0.0f;
  const float v3 = (bottom && left) ? plane[(long long)y_high * w + x_low] : 0.0f;
  const float v4 = (bottom && right) ? plane[(long long)y_high * w + x_high] : 0.0f;
  return hy * hx * v1 + hy * lx * v2 + ly * hx * v3 + ly * lx * v4;
}

// x: [c, h, w] (one image, every channel); offset: [offset_groups * 2 * kh * kw, oh, ow];
// mask: [offset_groups * kh * kw, oh, ow] (read when has_mask is 1). cols: [cin_g * kh * kw,
// oh * ow] for the cin_g channels of one weight group starting at channel0, row
// ci * kh * kw + tap, column oy * ow + ox. One thread per element of cols.
extern "C" __global__ void __launch_bounds__(VP_THREADS)
    deform_im2col(const float* __restrict__ x, int c, int channel0, int cin_g, int h, int w,
                  int kh, int kw, int sh, int sw, int ph, int pw, int dh, int dw, int oh,
                  int ow, const float* __restrict__ offset, const float* __restrict__ mask,
                  int has_mask, int offset_groups, float* __restrict__ cols) {
  const long long plane = (long long)oh * ow;
  const int taps = kh * kw;
  const long long total = (long long)cin_g * taps * plane;
  const int per_group = c / offset_groups;
  for (long long idx = vp_global_index(); idx < total; idx += vp_grid_stride()) {
    const long long row = idx / plane;
    const long long p = idx - row * plane;
    const int tap = (int)(row % taps);
    const int channel = channel0 + (int)(row / taps);
    const int og = channel / per_group;
    const int i = tap / kw;
    const int j = tap - i * kw;
    const int oy = (int)(p / ow);
    const int ox = (int)(p - (long long)oy * ow);
    const float dy = offset[((long long)og * 2 * taps + 2 * tap) * plane + p];
    const float dx = offset[((long long)og * 2 * taps + 2 * tap + 1) * plane + p];
    const float m = has_mask ? mask[((long long)og * taps + tap) * plane + p] : 1.0f;
    const float y = (float)(oy * sh - ph + i * dh) + dy;
    const float xf = (float)(ox * sw - pw + j * dw) + dx;
    cols[idx] = m * vp_deform_sample(x + (long long)channel * h * w, h, w, y, xf);
  }
}
