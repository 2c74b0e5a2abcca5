// Non-maximum suppression: the IoU bitmask kernel of torchvision's CUDA nms
// (csrc/ops/cuda/nms_kernel.cu). Boxes arrive sorted by decreasing score (the host sorts, with
// ties by ascending index as kernels::ops::nms does). Block (row, col) compares the 64 boxes of
// row block `row` with the 64 boxes of column block `col` (staged in shared memory) and sets
// bit j of mask[i * col_blocks + col] when box j of that block comes later than box i and
// IoU(i, j) > threshold (strict). The host then runs the greedy pass over the mask.
//
// IoU is computed with the same f32 operations and C++ std::max/min NaN behaviour as
// kernels::ops::nms (so the kept indices are exactly the CPU's). `thr` is the f32 that makes
// `iou > thr` equal to the CPU's `(double)iou > iou_threshold`. With use_classes != 0, boxes of
// different classes never suppress each other (batched NMS without the coordinate trick).

#define VP_NMS_BLOCK 64

VP_DEVICE float vp_nms_iou(const float* a, const float* b) {
  const float xx1 = vp_cxx_max(a[0], b[0]);
  const float yy1 = vp_cxx_max(a[1], b[1]);
  const float xx2 = vp_cxx_min(a[2], b[2]);
  const float yy2 = vp_cxx_min(a[3], b[3]);
  const float w = vp_cxx_max(0.0f, xx2 - xx1);
  const float h = vp_cxx_max(0.0f, yy2 - yy1);
  const float inter = w * h;
  const float area_a = (a[2] - a[0]) * (a[3] - a[1]);
  const float area_b = (b[2] - b[0]) * (b[3] - b[1]);
  return inter / (area_a + area_b - inter);
}

// boxes: [n, 4] in score order; classes: [n] (read only when use_classes != 0);
// mask: [n, col_blocks] (zero-initialised by the host; blocks below the diagonal stay 0).
// Launch: grid (col_blocks, col_blocks), block (64).
extern "C" __global__ void __launch_bounds__(VP_NMS_BLOCK)
    nms_mask(int n, const float* __restrict__ boxes, const long long* __restrict__ classes,
             int use_classes, float thr, unsigned long long* __restrict__ mask) {
  const int row_start = (int)blockIdx.y;
  const int col_start = (int)blockIdx.x;
  if (row_start > col_start) return;  // the whole block returns: no thread waits at the barrier

  const int row_size = vp_min_i(n - row_start * VP_NMS_BLOCK, VP_NMS_BLOCK);
  const int col_size = vp_min_i(n - col_start * VP_NMS_BLOCK, VP_NMS_BLOCK);

  __shared__ float block_boxes[VP_NMS_BLOCK * 4];
  __shared__ long long block_classes[VP_NMS_BLOCK];
  const int t = (int)threadIdx.x;
  if (t < col_size) {
    const long long j = (long long)col_start * VP_NMS_BLOCK + t;
    block_boxes[t * 4 + 0] = boxes[j * 4 + 0];
    block_boxes[t * 4 + 1] = boxes[j * 4 + 1];
    block_boxes[t * 4 + 2] = boxes[j * 4 + 2];
    block_boxes[t * 4 + 3] = boxes[j * 4 + 3];
    block_classes[t] = use_classes ? classes[j] : 0;
  }
  __syncthreads();

  if (t < row_size) {
    const long long cur = (long long)row_start * VP_NMS_BLOCK + t;
    const float* cur_box = boxes + cur * 4;
    const long long cur_class = use_classes ? classes[cur] : 0;
    unsigned long long bits = 0ULL;
    const int start = (row_start == col_start) ? t + 1 : 0;
    for (int i = start; i < col_size; ++i) {
      if (use_classes && block_classes[i] != cur_class) continue;
      if (vp_nms_iou(cur_box, block_boxes + i * 4) > thr) bits |= 1ULL << i;
    }
    const long long col_blocks = (n + VP_NMS_BLOCK - 1) / VP_NMS_BLOCK;
    mask[cur * col_blocks + col_start] = bits;
  }
}
