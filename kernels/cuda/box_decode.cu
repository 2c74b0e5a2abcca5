// Box decoding: torchvision's BoxCoder.decode (models/detection/_utils.py), as
// kernels::ops::boxes::BoxCoder::decode_one: deltas divided by the weights, dw/dh clamped
// to bbox_xform_clip (log(1000/16) by default) before exp, output (x1, y1, x2, y2).
// One thread per decoded box.

// rel: [n, 4k] deltas; boxes: [n, 4] reference boxes; out: [n, k, 4].
extern "C" __global__ void __launch_bounds__(VP_THREADS)
    box_decode(const float* __restrict__ rel, const float* __restrict__ boxes, int n, int k,
               float wx, float wy, float ww, float wh, float clip, float* __restrict__ out) {
  const long long total = (long long)n * k;
  for (long long idx = vp_global_index(); idx < total; idx += vp_grid_stride()) {
    const long long i = idx / k;
    const float* b = boxes + i * 4;
    const float* r = rel + idx * 4;
    const float widths = b[2] - b[0];
    const float heights = b[3] - b[1];
    const float ctr_x = b[0] + 0.5f * widths;
    const float ctr_y = b[1] + 0.5f * heights;
    const float dx = r[0] / wx;
    const float dy = r[1] / wy;
    const float dw = vp_clamp_max(r[2] / ww, clip);
    const float dh = vp_clamp_max(r[3] / wh, clip);
    const float pred_ctr_x = dx * widths + ctr_x;
    const float pred_ctr_y = dy * heights + ctr_y;
    const float pred_w = expf(dw) * widths;
    const float pred_h = expf(dh) * heights;
    const float c_to_c_h = 0.5f * pred_h;
    const float c_to_c_w = 0.5f * pred_w;
    float* o = out + idx * 4;
    o[0] = pred_ctr_x - c_to_c_w;
    o[1] = pred_ctr_y - c_to_c_h;
    o[2] = pred_ctr_x + c_to_c_w;
    o[3] = pred_ctr_y + c_to_c_h;
  }
}
