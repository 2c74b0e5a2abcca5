// Image pre-processing: u8 HWC RGB -> normalised f32 CHW, resized and zero-padded.
//
// Mirrors kernels::layers::preprocess::RcnnTransform::apply (torchvision's
// GeneralizedRCNNTransform): each channel value is normalised as (v / 255 - mean) / std, the
// normalised image is resized with bilinear interpolation (align_corners=False, source
// coordinate (d + 0.5) * in/out - 0.5 clamped at 0), and the [3, oh, ow] result is written
// into a zero [3, ph, pw] canvas (padding at the bottom and right). With oh = h and ow = w it
// is a plain HWC -> CHW conversion with normalisation (to_chw_normalized).

struct VpResizeTap {
  int i0;
  int i1;
  float l0;
  float l1;
};

// torch's bilinear source index and weights along one axis (align_corners=False, scale in/out),
// in the same f32 operations as kernels::layers::resize::axis_table.
VP_DEVICE VpResizeTap vp_resize_tap(int d, int in_size, int out_size) {
  const float s = (float)in_size / (float)out_size;
  float src = s * ((float)d + 0.5f) - 0.5f;
  src = (src < 0.0f) ? 0.0f : src;
  const int last = in_size - 1;
  int i0 = (int)floorf(src);
  if (i0 > last) i0 = last;
  float l1 = src - (float)i0;
  l1 = (l1 < 0.0f) ? 0.0f : ((l1 > 1.0f) ? 1.0f : l1);
  VpResizeTap t;
  t.i0 = i0;
  t.i1 = (i0 < last) ? i0 + 1 : i0;
  t.l0 = 1.0f - l1;
  t.l1 = l1;
  return t;
}

VP_DEVICE float vp_normalise(unsigned char v, float mean, float stdev) {
  return ((float)v / 255.0f - mean) / stdev;
}

// img: [h, w, 3] u8. out: [3, ph, pw] f32 (ph >= oh, pw >= ow). One thread per output value.
extern "C" __global__ void __launch_bounds__(VP_THREADS)
    preprocess_u8_hwc_to_chw(const unsigned char* __restrict__ img, int h, int w, int oh, int ow,
                             int ph, int pw, float mean0, float mean1, float mean2, float std0,
                             float std1, float std2, float* __restrict__ out) {
  const long long plane = (long long)ph * (long long)pw;
  const long long total = 3LL * plane;
  for (long long idx = vp_global_index(); idx < total; idx += vp_grid_stride()) {
    const int c = (int)(idx / plane);
    const long long rem = idx - (long long)c * plane;
    const int y = (int)(rem / pw);
    const int x = (int)(rem - (long long)y * pw);
    if (y >= oh || x >= ow) {
      out[idx] = 0.0f;
      continue;
    }
    const float mean = (c == 0) ? mean0 : ((c == 1) ? mean1 : mean2);
    const float stdev = (c == 0) ? std0 : ((c == 1) ? std1 : std2);
    const VpResizeTap ty = vp_resize_tap(y, h, oh);
    const VpResizeTap tx = vp_resize_tap(x, w, ow);
    const unsigned char* r0 = img + (long long)ty.i0 * w * 3;
    const unsigned char* r1 = img + (long long)ty.i1 * w * 3;
    const int j0 = tx.i0 * 3 + c;
    const int j1 = tx.i1 * 3 + c;
    const float top =
        tx.l0 * vp_normalise(__ldg(r0 + j0), mean, stdev) + tx.l1 * vp_normalise(__ldg(r0 + j1), mean, stdev);
    const float bot =
        tx.l0 * vp_normalise(__ldg(r1 + j0), mean, stdev) + tx.l1 * vp_normalise(__ldg(r1 + j1), mean, stdev);
    out[idx] = ty.l0 * top + ty.l1 * bot;
  }
}
