// Transformer kernels (kernels::layers::attention): the row softmax of attention scores and
// LayerNorm over the last axis. One block of VP_THREADS threads per row; each thread takes a
// strided share of the row, and the block reduces through shared memory (a tree, then thread
// 0 broadcasts). Statistics and sums are accumulated in double, as the CPU LayerNorm does its
// statistics; the softmax sum in double too (the CPU sums in f32 lanes or f64), so the two
// agree within a few ulp.

// Tree reduction of one double per thread (sum); every thread gets the total.
VP_DEVICE double vp_block_sum(double v, double* shared) {
  shared[threadIdx.x] = v;
  __syncthreads();
  for (int s = blockDim.x / 2; s > 0; s >>= 1) {
    if ((int)threadIdx.x < s) shared[threadIdx.x] += shared[threadIdx.x + s];
    __syncthreads();
  }
  const double total = shared[0];
  __syncthreads();
  return total;
}

// The same for a maximum of floats; NaN wins (torch's softmax of a row with NaN is NaN).
VP_DEVICE float vp_block_max(float v, float* shared) {
  shared[threadIdx.x] = v;
  __syncthreads();
  for (int s = blockDim.x / 2; s > 0; s >>= 1) {
    if ((int)threadIdx.x < s) {
      const float o = shared[threadIdx.x + s];
      const float m = shared[threadIdx.x];
      shared[threadIdx.x] = (o > m || vp_isnan(o)) ? o : m;
    }
    __syncthreads();
  }
  const float total = shared[0];
  __syncthreads();
  return total;
}

// scores, out: [rows, cols]: the softmax of each row. Launch: grid (rows), block VP_THREADS.
extern "C" __global__ void __launch_bounds__(VP_THREADS)
    attention_softmax(const float* __restrict__ scores, long long rows, int cols,
                      float* __restrict__ out) {
  __shared__ double sums[VP_THREADS];
  __shared__ float maxima[VP_THREADS];
  for (long long r = blockIdx.x; r < rows; r += gridDim.x) {
    const float* row = scores + r * cols;
    float* o = out + r * cols;
    float m = vp_neg_inf();
    for (int i = threadIdx.x; i < cols; i += blockDim.x) {
      const float v = row[i];
      m = (v > m || vp_isnan(v)) ? v : m;
    }
    m = vp_block_max(m, maxima);
    double s = 0.0;
    for (int i = threadIdx.x; i < cols; i += blockDim.x) {
      const float e = expf(row[i] - m);
      o[i] = e;
      s += (double)e;
    }
    const float inv = (float)(1.0 / vp_block_sum(s, sums));
    for (int i = threadIdx.x; i < cols; i += blockDim.x) o[i] *= inv;
  }
}

// x, out: [rows, dim]; weight, bias: [dim]. out = (x - mean) * rsqrt(var + eps) * w + b,
// with the mean and the (biased) variance in double. Launch: grid (rows), block VP_THREADS.
extern "C" __global__ void __launch_bounds__(VP_THREADS)
    layer_norm(const float* __restrict__ x, const float* __restrict__ weight,
               const float* __restrict__ bias, long long rows, int dim, float eps,
               float* __restrict__ out) {
  __shared__ double sums[VP_THREADS];
  for (long long r = blockIdx.x; r < rows; r += gridDim.x) {
    const float* row = x + r * dim;
    double s = 0.0;
    for (int i = threadIdx.x; i < dim; i += blockDim.x) s += (double)row[i];
    const double mean = vp_block_sum(s, sums) / (double)dim;
    double q = 0.0;
    for (int i = threadIdx.x; i < dim; i += blockDim.x) {
      const double d = (double)row[i] - mean;
      q += d * d;
    }
    const double var = vp_block_sum(q, sums) / (double)dim;
    const float inv = (float)(1.0 / sqrt(var + (double)eps));
    const float mean_f = (float)mean;
    float* o = out + r * dim;
    for (int i = threadIdx.x; i < dim; i += blockDim.x) {
      o[i] = (row[i] - mean_f) * inv * weight[i] + bias[i];
    }
  }
}
