// Convolution on the GPU as im2col + cuBLAS SGEMM + bias/activation, the same computation as
// kernels::layers::Conv2d's im2col path (torch's conv2d semantics: zero padding, stride,
// dilation; groups handled by the host, one im2col and GEMM per image and group).

// x: [cin, h, w] (one image, one group's input channels); cols: [cin * kh * kw, oh * ow],
// row (ci * kh + ky) * kw + kx, column oy * ow + ox. One thread per element of cols.
extern "C" __global__ void __launch_bounds__(VP_THREADS)
    conv_im2col(const float* __restrict__ x, int cin, int h, int w, int kh, int kw, int sh,
                int sw, int ph, int pw, int dh, int dw, int oh, int ow,
                float* __restrict__ cols) {
  const long long plane = (long long)oh * ow;
  const long long total = (long long)cin * kh * kw * plane;
  for (long long idx = vp_global_index(); idx < total; idx += vp_grid_stride()) {
    const long long row = idx / plane;
    const long long p = idx - row * plane;
    const int kx = (int)(row % kw);
    const int ky = (int)((row / kw) % kh);
    const long long ci = row / ((long long)kw * kh);
    const int oy = (int)(p / ow);
    const int ox = (int)(p - (long long)oy * ow);
    const int iy = oy * sh - ph + ky * dh;
    const int ix = ox * sw - pw + kx * dw;
    float v = 0.0f;
    if (iy >= 0 && iy < h && ix >= 0 && ix < w) {
      v = x[(ci * h + iy) * w + ix];
    }
    cols[idx] = v;
  }
}

// y = act(x + bias[channel]) for x: [n, c, plane] (bias ignored when has_bias is 0).
// act: 0 identity, 1 relu, 2 relu6, 3 leaky relu (slope), 4 sigmoid, 5 tanh, 6 silu,
// 7 hard swish, 8 hard sigmoid; NaN passes through relu as in torch (and the CPU layers).
extern "C" __global__ void __launch_bounds__(VP_THREADS)
    bias_activation(const float* __restrict__ x, const float* __restrict__ bias, int has_bias,
                    int c, long long plane, long long total, int act, float slope,
                    float* __restrict__ y) {
  for (long long idx = vp_global_index(); idx < total; idx += vp_grid_stride()) {
    float v = x[idx];
    if (has_bias) {
      v += bias[(idx / plane) % c];
    }
    switch (act) {
      case 1: v = v < 0.0f ? 0.0f : v; break;
      case 2: v = v < 0.0f ? 0.0f : (v > 6.0f ? 6.0f : v); break;
      case 3: v = v > 0.0f ? v : v * slope; break;
      case 4: v = 1.0f / (1.0f + expf(-v)); break;
      case 5: v = tanhf(v); break;
      case 6: v = v / (1.0f + expf(-v)); break;
      case 7: {
        float t = v + 3.0f;
        t = t < 0.0f ? 0.0f : (t > 6.0f ? 6.0f : t);
        v = v * t / 6.0f;
        break;
      }
      case 8: {
        float t = v + 3.0f;
        t = t < 0.0f ? 0.0f : (t > 6.0f ? 6.0f : t);
        v = t / 6.0f;
        break;
      }
      default: break;
    }
    y[idx] = v;
  }
}
