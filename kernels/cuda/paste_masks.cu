// Mask pasting: torchvision's paste_masks_in_image (models/detection/roi_heads.py) as
// kernels::ops::paste_masks computes it. The host works out, per mask, the integer geometry
// of the expanded box (expand_boxes with scale (M + 2p) / M, truncation toward zero): the
// resized size (rh, rw), the offset of image pixel (0, 0) in the resized mask (oy, ox) and the
// visible image region [y0, y1) x [x0, x1) (empty for NaN, infinite or off-image boxes).
// One thread per output pixel [i, y, x]: zero outside the region, otherwise the bilinear
// (align_corners=False) sample of the zero-padded mask at resized position (y - oy, x - ox).
//
// torch's CPU bilinear kernel rounds differently for small outputs (rh + rw <= 128: a
// channels-last kernel whose source index and blend use fused multiply-adds) and large ones
// (the generic separable kernel, lerps v0 * l0 + v1 * l1 contracted by GCC); both are mirrored
// with explicit fmaf, so the result is bit-identical to the CPU op.

struct VpMaskTap {
  long long i0;
  long long i1;
  float l0;
  float l1;
};

VP_DEVICE VpMaskTap vp_mask_tap(long long d, long long out_size, long long in_size, bool fused) {
  VpMaskTap t;
  if (out_size == in_size) {
    t.i0 = d;
    t.i1 = d;
    t.l0 = 1.0f;
    t.l1 = 0.0f;
    return t;
  }
  const float scale = (float)in_size / (float)out_size;
  const float dd = (float)d + 0.5f;
  float src = fused ? fmaf(scale, dd, -0.5f) : scale * dd - 0.5f;
  src = (src < 0.0f) ? 0.0f : src;
  long long i0 = (long long)floorf(src);
  if (i0 > in_size - 1) i0 = in_size - 1;
  float l1 = src - (float)i0;
  l1 = (l1 < 0.0f) ? 0.0f : ((l1 > 1.0f) ? 1.0f : l1);
  t.i0 = i0;
  t.i1 = (i0 < in_size - 1) ? i0 + 1 : i0;
  t.l0 = 1.0f - l1;
  t.l1 = l1;
  return t;
}

// Value of the zero-padded mask (padding `pad` on every side) at padded position (r, c).
VP_DEVICE float vp_padded(const float* m, int mh, int mw, int pad, long long r, long long c) {
  const long long rr = r - pad;
  const long long cc = c - pad;
  if (rr < 0 || rr >= mh || cc < 0 || cc >= mw) return 0.0f;
  return __ldg(m + rr * mw + cc);
}

// masks: [n, mh, mw]; geom: [n, 8] = (rh, rw, oy, ox, y0, y1, x0, x1); out: [n, im_h, im_w].
extern "C" __global__ void __launch_bounds__(VP_THREADS)
    paste_masks(const float* __restrict__ masks, const long long* __restrict__ geom, int n, int mh,
                int mw, int pad, int im_h, int im_w, float* __restrict__ out) {
  const long long plane = (long long)im_h * im_w;
  const long long total = (long long)n * plane;
  const long long in_h = (long long)mh + 2 * pad;
  const long long in_w = (long long)mw + 2 * pad;
  for (long long idx = vp_global_index(); idx < total; idx += vp_grid_stride()) {
    const long long i = idx / plane;
    const long long rem = idx - i * plane;
    const long long y = rem / im_w;
    const long long x = rem - y * im_w;
    const long long* g = geom + i * 8;
    if (y < g[4] || y >= g[5] || x < g[6] || x >= g[7]) {
      out[idx] = 0.0f;
      continue;
    }
    const long long rh = g[0];
    const long long rw = g[1];
    const bool fused = rh + rw <= 128;
    const VpMaskTap ty = vp_mask_tap(y - g[2], rh, in_h, fused);
    const VpMaskTap tx = vp_mask_tap(x - g[3], rw, in_w, fused);
    const float* m = masks + i * (long long)mh * mw;
    const float a = vp_padded(m, mh, mw, pad, ty.i0, tx.i0);
    const float b = vp_padded(m, mh, mw, pad, ty.i0, tx.i1);
    const float c = vp_padded(m, mh, mw, pad, ty.i1, tx.i0);
    const float d = vp_padded(m, mh, mw, pad, ty.i1, tx.i1);
    float v;
    if (fused) {
      const float w00 = ty.l0 * tx.l0;
      const float w01 = ty.l0 * tx.l1;
      const float w10 = ty.l1 * tx.l0;
      const float w11 = ty.l1 * tx.l1;
      v = fmaf(d, w11, fmaf(c, w10, fmaf(a, w00, b * w01)));
    } else {
      const float t0 = fmaf(a, tx.l0, b * tx.l1);
      const float t1 = fmaf(c, tx.l0, d * tx.l1);
      v = fmaf(t0, ty.l0, t1 * ty.l1);
    }
    out[idx] = v;
  }
}
