#!/usr/bin/env python3
"""Writes plugins/centernet/tests/fixtures/centernet_resdcn18.json (`--arch resdcn_18`, the
default) and centernet_dla34.json (`--arch dla_34`; `--arch all` writes both): the official
CenterNet code (xingyizhou/CenterNet at commit 4c50fd3a, "Objects as Points") for the `ctdet`
task with arch `resdcn_18` / `dla_34`, run on CPU with generated weights on real photos,
through the official detector (CtdetDetector.run: cv2 pre-processing, model, ctdet_decode,
post-processing). Everything up to "DLA-34" below describes resdcn_18; that section gives
what differs for dla_34 (the pre-processing, decode, post-processing, weight generation,
checks and JSON conventions are shared). `--task multi_pose --arch dla_34` writes
centernet_multi_pose_dla34.json instead: the official `multi_pose` task (human pose: person
boxes and 17 keypoints, MultiPoseDetector.run, multi_pose_decode, multi_pose_post_process)
on the same DLA-34 trunk, weights and photos; see "Multi-pose" at the end.

Setup (pip packages: torch, torchvision, numpy, opencv-python; CenterNet's other imports,
progress and matplotlib, are stubbed when missing, see "Patches"). CenterNet is not
installed: its source tree is extracted and `src/` put first on sys.path, as running
src/demo.py does:

    mkdir -p /tmp/centernet
    git --git-dir=<mirror of xingyizhou/CenterNet>/repo archive 4c50fd3a | tar -x -C /tmp/centernet
    CENTERNET_REPO=/tmp/centernet \
        target/venv-torch/bin/python tests/reference/make_centernet_fixtures.py \
        [--arch resdcn_18|dla_34|all] [--task ctdet|multi_pose] [--threads N]

(CENTERNET_REPO defaults to /tmp/centernet.) Run by developers, not by CI (CI reads the
committed fixtures). About 15 s for resdcn_18 and 15-45 s for dla_34 on two threads
(torch.set_num_threads(2)), the float64 runs included (one minute for `--arch all` on a
2-core machine). Running it twice writes the same files, byte for byte. `--threads N`
(default 2) sets torch.set_num_threads; the float32 values depend on it in their last bits
(the CPU kernels sum in another order): on the 2-core machine used, `--arch all --threads 1`
reproduces level0 / level1 of centernet_dla34.json (layer4 of centernet_resdcn18.json)
exactly and differs from level2 (deconv1) on by float32 rounding (scores by up to 1.3e-6,
boxes by up to 1.5e-5 output pixels, the same detections in the same order). The ctdet
fixtures were written with the default 2 threads, centernet_multi_pose_dla34.json with
`--threads 1` (see "Multi-pose").
`--task` (default ctdet) picks the task; `--task multi_pose` needs `--arch dla_34`. If the bare git
mirror named by CENTERNET_GIT_DIR (default /work/.mirror/xingyizhou+CenterNet/repo) exists,
the script first checks that every src/**.py of the tree and the DCNv2 C / CUDA sources in
DCN_SOURCES are byte-identical to the commit's (83 files), and that no compiled DCNv2 `_ext`
exists; otherwise it prints a note.

Pipeline, all official code (src/demo.py's path, minus its `opt.debug = max(opt.debug, 1)`,
which would open windows):
    opt = opts().init(["ctdet", "--arch", "resdcn_18", "--gpus", "-1"])
    opt.load_model = <temporary checkpoint {"epoch": 0, "state_dict": generated tensors}>
    detector = detector_factory["ctdet"](opt)      # CtdetDetector: create_model, load_model
    ret = detector.run("assets/<photo>")           # cv2.imread, one scale, results per class
`--gpus -1` is CenterNet's own CPU switch (opt.gpus = [-1] -> opt.device = cpu). Every other
option is opts.py's default (asserted): heads {hm: 80, wh: 2, reg: 2} (reg_offset on,
cat_spec_wh off), head_conv 64 (-1 -> 64 for non-DLA archs), K 100, fix_res (keep_res off),
input 512 x 512 (ctdet's default_resolution), down_ratio 4 (output 128 x 128), test_scales
[1], flip_test off, nms off, debug 0, and init()'s default ctdet dataset info mean [0.408,
0.447, 0.470], std [0.289, 0.274, 0.278] -- BGR order, stored by BaseDetector as float32
arrays. (src/test.py, the COCO evaluation, instead takes mean / std from the COCO dataset
class: [0.40789654, 0.44719302, 0.47026115] / [0.28863828, 0.27408164, 0.27809835]; the demo
values are the ones used here.) The official load_model reads the checkpoint
(load_state_dict(strict=False) after its own key / shape checks); the script then
load_state_dict(strict=True)s the same tensors again and asserts that every tensor of the
model equals the generated one. Intermediate values are read with forward hooks (cloned:
ReLU(inplace=True) and hm.sigmoid_() follow) and by wrapping the detector's bound
pre_process / process / post_process in pass-through recorders; the pre-processing is redone
step by step to keep the uint8 warped image (asserted to give exactly the model's input).

What the official code computes (read from the code at this commit; asserted where cheap):
  - BaseDetector.run reads the photo with cv2.imread(path): uint8 HWC in BGR order (the PNG
    photos have no alpha). pre_process(image, scale 1): new size = (int(h * 1), int(w * 1)),
    c = float32 [w / 2, h / 2], s = max(h, w) * 1.0 (fix_res); trans_input =
    get_affine_transform(c, s, 0, [512, 512]) (utils/image.py: three point pairs in float32
    -- centre -> (256, 256), centre + (0, -s / 2) -> (256, 0), and the third point of each
    right angle -- solved by cv2.getAffineTransform in float64: here [[512 / s, 0, 256 -
    c_x * 512 / s], [0, 512 / s, 256 - c_y * 512 / s]], stored as returned, -0.0 included);
    resized = cv2.resize(image, (w, h)) (same size: a copy, asserted equal); inp =
    cv2.warpAffine(resized, trans_input, (512, 512), flags=cv2.INTER_LINEAR) (BORDER_CONSTANT
    0: black bars above and below a landscape photo); x = ((inp / 255. - mean) / std)
    .astype(float32), i.e. per value float32(((u / 255.0) - float64(mean32[ch])) /
    float64(std32[ch])) with float64 arithmetic; transposed to [1, 3, 512, 512] (channel 0 =
    B). meta = {c, s, out_height 128, out_width 128}.
    cv2.warpAffine (opencv-python 5.1.0 here) is checked, for both photos, to equal a plain
    float32 bilinear warp bit for bit (`warp_affine_float32`: inverse map in float64 as OpenCV
    inverts it, cast to float32; sx = m0 * x + m1 * y + m2, sy likewise, in float32; taps
    outside the photo read 0; r = (v00 (1 - ax) + v01 ax) (1 - ay) + (v10 (1 - ax) + v11 ax) ay
    in float32, rounded half to even, saturated): "float32_formula_differing_bytes" records
    the count (0 and 0). Older OpenCV releases warped 8-bit images in fixed point (source
    coordinates quantised to 1/32 px, 15-bit integer weights); a port of that algorithm
    differs from these bytes in 38k / 54k of 786k values (by up to 3 / 4), so the stored
    bytes are OpenCV-version dependent; the fixture stores them exactly. The x86 wheels run
    this warp through Intel IPP when cv2.ipp.useIPP() is true (their default); IPP rounds
    some exact .5 ties the other way (not on these two photos, but by one level on up to 3% of
    the pixels of other sizes, see tests/reference/make_cv_warp_fixtures.py), so the script
    calls cv2.ipp.setUseIPP(False) and the fixture holds OpenCV's own kernel, which
    kernels::layers::resample::cv_warp_affine_u8 reproduces.
  - Model (models/networks/resnet_dcn.py get_pose_net(18, heads, 64) = PoseResNet): a
    torchvision-style ResNet-18 (conv1 7x7/2 no bias, bn1, ReLU, maxpool 3/2 pad 1; layer1..4
    of two BasicBlocks, 64/128/256/512 planes, stride 2 on conv1 of layer2..4's first block,
    downsample = 1x1 conv/2 + BN; all BatchNorm2d eps 1e-5, eval mode: running statistics),
    layer4 [512, 16, 16]; then deconv_layers, three stages of six modules (indices 6i..6i+5):
    DCN(inplanes -> planes, 3x3, stride 1, pad 1, dilation 1, deformable_groups 1, with bias),
    BatchNorm2d, ReLU, ConvTranspose2d(planes, planes, 4, stride 2, pad 1, output_padding 0,
    no bias), BatchNorm2d, ReLU, planes 256, 128, 64: 16 -> 32 -> 64 -> 128; then the heads
    hm (80), wh (2), reg (2), each Sequential(Conv2d(64, 64, 3, pad 1, bias), ReLU,
    Conv2d(64, n, 1, bias)), registered in that order; forward returns [{hm, wh, reg}] (raw).
    DCN.forward (DCNv2/dcn_v2.py): out = conv_offset_mask(input) (Conv2d(inplanes, 27, 3,
    pad 1, bias)); o1, o2, m = torch.chunk(out, 3, dim=1); offset = torch.cat((o1, o2), 1)
    (= channels 0..17 unchanged: the chunk / cat is the identity on the offsets); mask =
    sigmoid(channels 18..26); then the compiled modulated deformable convolution.
    DCNv2's semantics (src/cuda/dcn_v2_im2col_cuda.cu modulated_deformable_im2col_gpu_kernel,
    dmcn_im2col_bilinear; src/dcn_v2_cuda.c dcn_v2_cuda_forward; src/dcn_v2.c, the CPU
    build, only prints "only implemented in GPU"): for output (y, x), kernel position
    k = i * 3 + j and input channel c of deformable group g, offset channel g * 18 + 2k is dy
    and g * 18 + 2k + 1 is dx (groups outer, then kernel position, then (dy, dx)); mask
    channel g * 9 + k; the sample is at (y * stride - pad + i * dilation + dy, x * stride -
    pad + j * dilation + dx), bilinear over the four neighbours with each tap outside the
    map read as 0 and the whole sample 0 unless -1 < h < H and -1 < w < W; column value =
    sample * mask; output = bias + weight [out, in * 9] @ columns. torchvision's CPU
    deform_conv2d (csrc/ops/cpu/deform_conv2d_kernel.cpp: deformable_im2col_kernel,
    bilinear_interpolate, the same `h <= -1 || height <= h` test, offset_idx = 2 * (i *
    weight_w + j) for h and + 1 for w, offset groups outer, mask multiplied into the column)
    is the same computation; `check_dcn_semantics` compares it with a float64 numpy port of
    the CUDA kernel on small maps with offsets of +-3 px, 1 and 2 deformable groups:
    identical ("dcn_check": max |diff| 0.0). The two differ only in float32 summation order
    (DCNv2 starts the GEMM from the bias, torchvision adds it after).
  - CtdetDetector.process: output = model(images)[-1]; hm = output["hm"].sigmoid_();
    dets = ctdet_decode(hm, wh, reg, K=100) (models/decode.py):
      _nms: hmax = max_pool2d(heat, 3, stride 1, padding 1); heat * (hmax == heat) (exact
        float equality: a value is kept iff no 3x3 neighbour is larger; equal neighbours are
        both kept);
      _topk: per class torch.topk of the 16384 values (K 100), then torch.topk of the
        80 * 100 candidates; class = (index / 100).int(), y = (inds / 128).int(), x = inds %
        128 (`/` is true division in current torch, integer division in the torch 0.4 the code
        was written for: the same results here, asserted through `index == y * 128 + x`);
      x += reg[0][y, x], y += reg[1][y, x]; box = [x - w / 2, y - h / 2, x + w / 2, y + h / 2]
        with (w, h) = wh[:, y, x]; detections [1, 100, 6] = box, score, class (float32, output
        pixels), in descending score order.
  - post_process: ctdet_post_process(dets (float32 numpy copy), [c], [s], 128, 128, 80):
    both box corners through transform_preds(coords, c, s, (128, 128)): trans =
    get_affine_transform(c, s, 0, (128, 128), inv=1) ("trans_output_inv", float64: [[s / 128,
    0, c_x - s / 2], [0, s / 128, c_y - s / 2]]), each point np.dot(trans, float32 [x, y, 1])
    in float64, written back into the float32 array (rounded to float32); then per class
    j = 1..80 the rows whose class == j - 1: [x1, y1, x2, y2, score] as float32 (/ scale 1).
    Boxes are not clipped: detections in the black bars get y < 0 or y > h.
  - merge_outputs: one scale and opt.nms off, so no soft_nms (external/nms is not built: its
    import fails inside the official try / except, which prints "NMS not imported!"); the
    100 scores are not more than max_per_image 100, so nothing is cut. results = {j: float32
    [n_j, 5]} for j = 1..80; COCO category id = COCO._valid_ids[j - 1]
    (src/lib/datasets/dataset/coco.py, read with `ast`, since COCO.__init__ needs the
    annotation files).

Patches (in this script only; the CenterNet sources are not edited):
  1. DCNv2. dcn_v2_func.py does `from ._ext import dcn_v2 as _backend` (the cffi extension
     of torch 0.4's torch.utils.ffi, which cannot be built) and DCNv2Function is a legacy
     autograd.Function (non-static forward, instantiated per call) that current torch refuses
     to call ("Legacy autograd function with non-static forward method is deprecated") and
     that raises NotImplementedError for CPU tensors anyway. So: a fake module
     `models.networks.DCNv2._ext` (with `.dcn_v2`) is put in sys.modules before the import;
     its `dcn_v2_cuda_forward(input, weight, bias, ones, offset, mask, output, columns, kh,
     kw, sh, sw, ph, pw, dh, dw, deformable_group)` -- the C function's signature -- writes
     torchvision.ops.deform_conv2d(input, offset, weight, bias, stride, padding, dilation,
     mask) into `output`; and `dcn_v2.DCNv2Function` (the name DCN.forward calls) is replaced
     by DCNv2FunctionCPU: the official forward's body (output = input.new(*_infer_shape(...)),
     the official `_infer_shape` reused; the same arguments to `_backend.dcn_v2_cuda_forward`)
     without the is_cuda test and the legacy Function machinery. The official DCN /
     DCNv2 classes, conv_offset_mask, chunk / cat / sigmoid are untouched.
  2. torch.cuda.synchronize is replaced by a no-op when CUDA is unavailable: process() and
     run() call it unconditionally, and a CUDA build of torch without a GPU raises ("Found no
     NVIDIA driver").
  3. resnet_dcn.model_zoo is replaced by a namespace whose load_url returns {} (recorded,
     asserted to be resnet18's URL, once per model built): PoseResNet.init_weights
     downloads the ImageNet ResNet-18; with {} its load_state_dict(strict=False) loads
     nothing and its deconv BN init runs; every tensor is replaced afterwards anyway.
  4. Stub modules, only if not installed: progress.bar (imported by the detectors, Bar
     unused at inference) and matplotlib.pyplot (Debugger.__init__ imports it and
     run() builds a Debugger even at debug 0; nothing is drawn at debug 0).
  5. pose_dla_dcn.model_zoo (dla_34 only) is replaced by a namespace whose load_url records
     the URL (asserted: http://dl.yf.io/dla/models/imagenet/dla34-ba72cf86.pth, once per
     model built) and returns the state dict of that file's names and shapes, all zeros (the
     DLA-34 body without num_batches_tracked, then fc.weight [1000, 512, 1, 1] and fc.bias
     [1000]): get_pose_net builds DLASeg with pretrained=True, and DLA.load_pretrained_model
     sizes the `fc` it adds from the last entry (`{}` would raise IndexError) before
     load_state_dict(strict=True)ing it; every tensor is replaced afterwards anyway.

Weights. Every floating tensor of the model's state dict (151 tensors, 14,448,741 values) is
generated from its *name* exactly as make_maskrcnn_fixtures.py does (`generate` imported from
it, reproduced bit for bit by `kernels::weights::generated_tensor`):

    seed  = FNV-1a 64 of the full state-dict name (e.g. "layer1.0.conv1.weight")
    z_i   = splitmix64(seed + (i + 1) * 0x9E3779B97F4A7C15)     for element i (row-major)
    u_i   = float32(z_i >> 40) / 2^24                            exact, in [0, 1)
    value = (u_i * 2 - 1) * a + b                                each step rounded to float32

The 26 `*.num_batches_tracked` buffers (int64 scalars, BatchNorm2d's training counter, unused
in eval mode) keep their value 0 and are listed under "not_generated"; they are in the
checkpoint (load_state_dict(strict=True) needs them). The names are the model's own, i.e.
those of the official checkpoints' "state_dict" (after load_model strips a "module." prefix):
  conv1.weight, bn1.{weight,bias,running_mean,running_var,num_batches_tracked},
  layer{1..4}.{0,1}.conv{1,2}.weight, layer{1..4}.{0,1}.bn{1,2}.*,
  layer{2,3,4}.0.downsample.0.weight, layer{2,3,4}.0.downsample.1.* (BN),
  deconv_layers.{0,6,12}.{weight,bias} (DCN: [planes, inplanes, 3, 3], [planes]),
  deconv_layers.{0,6,12}.conv_offset_mask.{weight,bias} ([27, inplanes, 3, 3], [27]),
  deconv_layers.{1,4,7,10,13,16}.* (BN), deconv_layers.{3,9,15}.weight (ConvTranspose2d
  [planes, planes, 4, 4], torch layout [in, out, kh, kw]),
  {hm,wh,reg}.0.{weight,bias} ([64, 64, 3, 3]), {hm,wh,reg}.2.{weight,bias} ([n, 64, 1, 1]).
(a, b) per tensor is stored in the fixture; `range_of`:
  - BatchNorm2d: weight 0.75 +- 0.25, bias and running_mean +- 0.1, running_var 1 +- 0.5;
  - conv weights: gain g -> a = float32(g * sqrt(3 / fan_in)), b = 0, fan_in = in * kh * kw;
    for the ConvTranspose2d weights the fan-in used is in_channels * 4 (= shape[0] * 4:
    with kernel 4, stride 2, padding 1 every output pixel gets 2 x 2 taps of every input
    channel; torch's fan-in formula, shape[1] * 16, would be 4x larger);
  - every bias +- 0.1 (DCN, conv_offset_mask's and the heads' first conv), except below;
  - tuned (constants after the imports), chosen by measuring the run. With unit gains
    everywhere the activations shrink stage after stage (layer4 rms 0.27, the deconv outputs
    ~0.07, i.e. the BN biases' size): the heads then output their biases, one class (bus)
    takes all 100 detections with scores 0.1673..0.1670, and they sit on the top rows (a
    border effect). So:
      BACKBONE_CONV_GAIN 1.3 (every ResNet conv): layer4 rms 1.4 / 1.8 (chelsea / coffee);
        with the other values below, 1.4 gives 7-8 classes but deconv3's float32 error
        (see "Conditioning") 3.6e-5 / 5.7e-5 and two scores 6e-8 apart; 1.2 gives scores
        ~0.3 and consecutive gaps of 1.5e-6;
      DCN_GAIN 3 (the DCN weight; the mask, ~0.5 on average, halves its output) and UP_GAIN
        1.6 (ConvTranspose2d): deconv1 rms 1.0 / 1.3, deconv3 0.34 / 0.43 (UP_GAIN 2: deconv3
        error 2.2e-5 / 3.1e-5, 2.3x);
      OFFSET_GAIN 0.55 and conv_offset_mask.bias +- 0.5: first-stage offsets up to 2.6 / 3.0 px
        (mean |offset| 0.60 / 0.75), masks 0.08..0.87; larger offsets move detections from
        the black bars onto the photo (coffee: 40 of 100 on the photo at gain 0.25, 68 at
        0.55, 71 at 0.7, where the float32 and float64 runs already order two detections
        differently);
      HEAD_CONV_GAIN 1.7 (hm.0 / wh.0 / reg.0 weights);
      HM_GAIN 1 and hm.2.bias -2.19 +- 0.5 (the official bias fill -2.19, sigmoid 0.10, as
        centre): hm logits -4.6..0.12 / -5.1..0.63;
      wh.2.weight gain 2, wh.2.bias 12 +- 4 (output pixels): wh 9.7..14.7 (boxes of 39..59
        input pixels); reg.2.weight gain 0.1, reg.2.bias 0.5 +- 0.2: reg 0.21..0.55.
    The final gains were picked from a scan (up 1.6 / 1.8, offset 0.4 / 0.55, head conv
    1.7 / 2 / 2.4, hm 0.8 / 1 / 1.2, hm bias +- 0.5 / 1) for the largest smallest margin
    among those with many detections on the photo. The result (printed by the script):
      chelsea: scores 0.530..0.443, 4 classes (58 potted plant 40, 5 bus 38, 15 cat 13,
        11 stop sign 9; 0-based decode classes); coffee: 0.652..0.519, 5 classes (58: 48,
        5: 25, 15: 23, 13 bench: 2, 11: 2).
    The black bars (rows 0..21 and 107..127 of the 128 x 128 output for both photos) are a
    constant input; there the random network's features repeat with the 8-pixel period of the
    three stride-2 upsamplings, and only 3 of chelsea's 100 detections have their peak on a
    row well inside the photo (22..105; coffee: 68), the others lie in the bars or on their
    edge rows: these differ only through the content in their (large) receptive fields,
    which the margins below show is enough.
    Margins (chelsea / coffee; `margins`): 100th - 101st candidate score (top100_cut_gap)
    3.2e-4 / 4.8e-4; smallest gap between consecutive kept scores 1.4e-5 / 1.0e-5; heatmap
    values within 1e-6 below their 3x3 maximum (an NMS decision a rounding could flip) 10 /
    11 of 1.3M, none at or above the 101st score; above that score 3 / 4 values are
    suppressed, the nearest 5.5e-3 / 1.3e-2 below its neighbour; the kept top-100 peaks
    exceed their other 8 neighbours by at least the same 5.5e-3 / 1.3e-2; no plateaus.

Conditioning (the float64 check). The model is deep-copied and converted with .double()
before any hook is registered (every floating parameter and buffer becomes float64,
asserted; the patched DCN backend runs torchvision's float64 kernel) and run on the same
input tensor (the float32 values as float64); the decode is re-run on its outputs. Per stored
tensor "f64_relative_error" is max |f32 - f64| / max(1, |f64|) over its elements (dcn1_offset /
dcn1_mask: the first DCN's offset and mask; heat: sigmoid(hm)): chelsea / coffee layer4
4.1e-6 / 4.6e-6, deconv1 6.0e-6 / 7.0e-6, deconv2 7.3e-6 / 9.8e-6, deconv3 9.5e-6 / 1.3e-5,
dcn1_offset 1.6e-6 / 1.9e-6, dcn1_mask 3.1e-7 / 3.8e-7, hm 5.4e-6 / 7.8e-6, wh 1.2e-6 /
1.3e-6, reg 5.7e-7 / 6.9e-7, heat 1.2e-6 / 1.6e-6; "f64_decode": the float64 run picks the
same 100 (index, class) pairs in the same order, scores within 1.0e-6 / 1.2e-6, boxes within
9.2e-6 / 1.1e-5 output pixels: 14x / 8.5x below the smallest consecutive score gap and
300-400x below the top-100 cut.

Photos (assets/, read by the official run() with cv2.imread): chelsea.png (264 x 397: s 397,
scale 512 / 397, content rows 85.8..426.2 of the 512 x 512 input) and coffee.png (240 x 360:
s 360, scale 512 / 360, content rows 85.3..426.7).

JSON (floats with 9 significant digits, enough to round-trip float32; weight ranges, c, s and
the affine matrices exact):
  generator; reference {centernet (full commit), torch, torchvision, numpy, cv2};
  config (the options above; mean / std as given and as float32, their channel order BGR,
  bn_eps, the DCN and deconv hyper-parameters); coco_valid_ids [80] (COCO._valid_ids:
  category id of class j (1-based) = coco_valid_ids[j - 1]); class_names [80] (COCO.
  class_name without "__background__"); dcn_check; weights [{name, shape, a, b}] in
  state_dict order; not_generated [{name, shape [], dtype int64, value 0, why}];
  cases, one per photo:
    photo, read, original_size [h, w], c [x, y], s, trans_input (2 x 3, float64 as
    get_affine_transform returns it), trans_output_inv (2 x 3, the inverse 128 x 128 ->
    photo transform of post-processing), out_size [128, 128];
    warped: the uint8 [512, 512, 3] cv2.warpAffine output before normalisation: shape,
      layout "HWC, BGR, uint8", sha256 and fnv1a64 (hex, FNV-1a 64 over the bytes) of its raw
      row-major HWC BGR bytes, png_base64 (cv2.imencode(".png"), lossless; cv2 writes the
      BGR array as a normal RGB PNG, so a PNG decoder returns RGB: decoded channel k = array
      channel 2 - k), float32_formula_differing_bytes;
    summaries (`summary`, batch axis dropped, channel axis 0): input ([3, 512, 512], the
      normalised float32 tensor), layer4 ([512, 16, 16]), deconv1 / deconv2 / deconv3 (after
      each stage's final ReLU: [256, 32, 32], [128, 64, 64], [64, 128, 128]), dcn1_offset
      ([18, 16, 16]) and dcn1_mask ([9, 16, 16]) of the first DCN (deconv_layers.0), hm ([80,
      128, 128], raw, before the sigmoid), wh and reg ([2, 128, 128]);
    decode: the 100 detections of ctdet_decode in its order: score, class (0-based), index
      (y * 128 + x of the peak, before reg), x and y (peak + reg, output pixels), box [x1, y1,
      x2, y2] (output pixels);
    results: merge_outputs' result in the official order (class j = 1..80, within a class the
      decode order): class (j, 1-based, the results key), label (j - 1), category_id, box
      [x1, y1, x2, y2] (photo pixels, float32 values), score;
    margins (`margins`: top100_cut_gap, score_100, score_101, min_consecutive_gap_top100,
      nms_near_ties_1e-6 (values with 0 < 3x3 max - value < 1e-6), nms_near_ties_1e-6_above_cut
      (of those, values >= score_101), nms_suppressed_above_cut and
      nms_min_suppression_gap_above_cut (values >= score_101 that _nms zeroes, and their
      smallest gap to their 3x3 max), top100_min_peak_gap (smallest margin of a kept value
      >= score_100 over the other 8 values of its window), top100_plateaus (how many of those
      margins are 0)); f64_relative_error; f64_decode {same_indices_and_classes,
      max_abs_score_diff, max_abs_box_diff}.
Summaries are make_maskrcnn_fixtures.summary: shape, channel_axis, sum and abs_sum (float64),
min, max, channel_means, values at SAMPLES fixed random flat indices
(np.random.default_rng(case number)) plus the first and last, `indices` sorted and unique.

DLA-34 (`--arch dla_34`, writes centernet_dla34.json). Same pipeline, detector, checks and
conventions with opts().init(["ctdet", "--arch", "dla_34", "--gpus", "-1"]) (asserted:
head_conv 256, the -1 default for DLA archs; every other option as above) and patch 5.
  - Model (models/networks/pose_dla_dcn.py get_pose_net(34, heads, 256) = DLASeg("dla34",
    heads, pretrained=True, down_ratio=4, final_kernel=1, last_level=5, head_conv=256);
    first_level = log2(4) = 2). All BatchNorm2d eps 1e-5 (55: 39 in the body, 16 in the
    DeformConvs), every ReLU inplace.
    base = DLA([1, 1, 1, 2, 2, 1], [16, 32, 64, 128, 256, 512], BasicBlock, residual_root
    False): base_layer = Conv2d(3, 16, 7, stride 1, pad 3, no bias), BN, ReLU; level0 =
    Conv2d(16, 16, 3, pad 1, no bias), BN, ReLU; level1 = the same 16 -> 32 with stride 2;
    level2..5 = Trees (levels 1, 2, 2, 1, stride 2, see below). BasicBlock(in, out, s):
    relu(bn2(conv2(relu(bn1(conv1(x))))) + residual), 3x3 convs, pad 1, conv1 stride s.
    Tree.forward(x, residual=None, children=None): bottom = MaxPool2d(2, 2)(x) if stride 2
    else x; residual = project(bottom) (Conv2d 1x1 no bias + BN, present when in != out) or
    bottom; if level_root: children.append(bottom); x1 = tree1(x, residual); at levels 1:
    x2 = tree2(x1) and the output is root(x2, x1, *children) = relu(bn(conv1x1(cat(...))))
    (Root, no residual); at levels 2: children.append(x1), output = tree2(x1, children=
    children) (a levels-1 Tree with root_dim = its own 2 * out + the parent's children).
    level2 = Tree(1, 32 -> 64, level_root False): root in 128 = x2, x1; level3 = Tree(2, 64
    -> 128, level_root True): tree1 = Tree(1, 64 -> 128, stride 2, root 256), tree2 =
    Tree(1, 128 -> 128, root 448 = x2, x1, level3's bottom (64), level3's x1 (128)); level4
    the same at 128 -> 256 (roots 512, 896); level5 = Tree(1, 256 -> 512, level_root True,
    root 1280 = x2, x1, bottom). DLA.forward returns the six level outputs ("levels": [16,
    512, 512], [32, 256, 256], [64, 128, 128], [128, 64, 64], [256, 32, 32], [512, 16, 16],
    strides 1..32; base_layer's output is not returned).
    Unused tensors (doc "unused_in_forward", checked by `check_dla_unused`: replaced, every
    level stays bit-identical; a used projection changes them): base.fc.{weight, bias} (the
    classifier load_pretrained_model adds, never called) and base.level3.project.* /
    base.level4.project.* (Tree.forward at levels 2 computes project(bottom) and passes it
    to tree1 as `residual`, but tree1 is a Tree, whose forward recomputes its own residual
    with tree1.project and ignores the argument: the outer projection is computed and
    dropped). They are generated and in the checkpoint like the others (save_model writes
    model.state_dict(), so checkpoints trained with this code hold them too).
    dla_up = DLAUp(2, [64, 128, 256, 512], [1, 2, 4, 8]): ida_0 = IDAUp(256, [256, 512],
    [1, 2]), ida_1 = IDAUp(128, [128, 256, 256], [1, 2, 2]), ida_2 = IDAUp(64, [64, 128, 128,
    128], [1, 2, 2, 2]) (config "dla"."dla_up"."ida"; DLAUp.__init__ rewrites its in_channels
    list in place, the same object as self.channels, which reads [64, 64, 64, 64] afterwards,
    unused). IDAUp(o, channels, up_f) holds, for i >= 1, proj_i = DeformConv(channels[i], o),
    up_i = ConvTranspose2d(o, o, 2f, stride f, padding f // 2, output_padding 0, groups o, no
    bias) with f = up_f[i] (weight [o, 1, 2f, 2f]), node_i = DeformConv(o, o); DeformConv(c,
    o) = relu(bn(DCN(c, o, 3x3, stride 1, pad 1, dilation 1, deformable_groups 1, with
    bias))) (module names .conv = DCN, .actf.0 = BN). IDAUp.forward(layers, startp, endp)
    edits the list in place: for i in startp + 1 .. endp - 1: layers[i] = node_{i - startp}(
    up_{i - startp}(proj_{i - startp}(layers[i])) + layers[i - 1]). DLAUp.forward(levels):
    out = [levels[5]]; for k = 0, 1, 2: ida_k(levels, 4 - k, 6); out.insert(0, levels[5]);
    returns ("dla_up") [64 @ stride 4 [64, 128, 128], 128 @ 8, 256 @ 16, levels[5] itself
    (512 @ 32, asserted equal)]. Every up_i has f = 2 ([o, 1, 4, 4]) except ida_up.up_2 (f 4,
    [64, 1, 8, 8]). fill_up_weights' bilinear kernels are overwritten by load_model.
    DLASeg.forward: y = [dla_up[0], dla_up[1], dla_up[2]] (clones); ida_up = IDAUp(64, [64,
    128, 256], [1, 2, 4]) on (y, 0, 3): y[1] = node_1(up_1(proj_1(y[1])) + y[0]), y[2] =
    node_2(up_2(proj_2(y[2])) + y[1]); "features" = y[-1] [64, 128, 128] (read from the list
    ida_up filled, asserted equal to the heads' input); heads hm / wh / reg =
    Sequential(Conv2d(64, 256, 3, pad 1, bias), ReLU, Conv2d(256, n, 1, bias)).
    The 16 DCNs run in the order dla_up.ida_0.{proj_1, node_1}, ida_1.{proj_1, node_1,
    proj_2, node_2}, ida_2.{proj_1, node_1, ..., node_3}, ida_up.{proj_1, node_1, proj_2,
    node_2}; "dcn1_offset" / "dcn1_mask" are those of the first, dla_up.ida_0.proj_1 (on
    level5: [18, 16, 16] and [9, 16, 16]).
  - State-dict names (400 entries: 345 generated floating tensors, 20,208,476 values, 513,000
    of them base.fc's; 55 num_batches_tracked):
      base.base_layer.{0 (conv [16, 3, 7, 7]), 1 (BN)}, base.level0.{0, 1}, base.level1.{0, 1};
      base.level{2,5}.{tree1,tree2}.{conv1,conv2}.weight, .{bn1,bn2}.*, base.level{2,5}.root.
        {conv.weight, bn.*}, base.level{2,5}.project.{0.weight, 1.*};
      base.level{3,4}.{tree1,tree2}.{tree1,tree2}.{conv1,conv2,bn1,bn2}.*,
        base.level{3,4}.{tree1,tree2}.root.{conv,bn}.*, base.level{3,4}.tree1.project.{0,1}.*,
        base.level{3,4}.project.{0,1}.* (unused); base.fc.{weight, bias} (unused);
      dla_up.ida_{k}.{proj,node}_{i}.actf.0.* (BN), .conv.{weight, bias} (DCN [o, c, 3, 3]),
        .conv.conv_offset_mask.{weight [27, c, 3, 3], bias}, dla_up.ida_{k}.up_{i}.weight, for
        k = 0, 1, 2 and i = 1..k + 1; ida_up.{proj,node}_{1,2}.* likewise, ida_up.up_{1,2}.weight;
      {hm,wh,reg}.0.{weight [256, 64, 3, 3], bias}, {hm,wh,reg}.2.{weight [n, 256, 1, 1], bias}.
    (Each DeformConv's BN, actf.0, is listed before its DCN: registration order.)
  - Weights: range_of_dla, the same conventions (BatchNorm2d, every bias +- 0.1, conv gains
    on fan_in = in * kh * kw) with the DLA_* constants:
      DLA_BODY_CONV_GAIN 1.5 on every base.* conv: levels rms 0.67 0.46 0.33 0.44 0.57 0.68
        (chelsea; coffee 0.75 .. 0.83). The trees' roots concatenate and the blocks add, so
        this is steep (measured with the other values at resdcn's): 1.3 gives level2..5 rms
        0.15, hm logits -3.3..-1 (two classes); 1.6 gives level5 rms 2.1 / 2.6 and saturated
        scores (1.0000); 2.0 gives level5 rms 220.
      up_i weights 0.25 +- 0.1 (DLA_UP_RANGE: b = 1 / fan-in with fan-in 4 = the 2 x 2 taps of
        one channel each output pixel receives, for f = 2 and 4 alike (torch's formula,
        shape[1] * (2f)^2, gives 16 / 64); a = 0.4 b), so that the taps of an output pixel sum
        to 1 on average as fill_up_weights' bilinear ones do. Zero-mean taps (a = g * sqrt(3 /
        4), b = 0, resdcn's convention) make every up-sampled map a phase-dependent pattern
        with steep 1-pixel steps; the next DCN samples it at fractional positions computed in
        float32 (up to 127.x at stride 4, i.e. ~1e-5 px of rounding), which then shows as
        float32 vs float64 differences of 6.4e-5 / 8.8e-5 in the features and 3.5e-5 / 6.4e-5
        in hm (g 1.6, DCN gain 3); with these taps, under 7e-6.
      DLA_DCN_GAIN 2.7 (every DCN weight; eight DCNs lie in series from level5 to the
        features): 2.0 gives features rms 0.16 / 0.19 and scores ~0.19, 3.0 gives features
        rms 1.3 / 1.9 and scores 0.97..0.998; 2.7: features rms 0.76 / 1.12, dla_up rms 0.49 /
        0.55 / 0.64 / 0.68 (chelsea).
      DLA_OFFSET_GAIN 0.8 and conv_offset_mask.bias +- 0.5: first DCN |offset| mean 0.50 /
        0.57 px, max 1.7 / 2.3 px, masks 0.15..0.85.
      DLA_HEAD_CONV_GAIN 1.7, DLA_HM_GAIN 1, hm.2.bias -2.19 +- 1.0: hm logits -7.0..1.2 /
        -9.2..3.1; wh.2 gain 2, bias 12 +- 4: wh 7.8..14.2; reg.2 gain 0.1, bias 0.5 +- 0.2: reg
        0.13..0.39 / -0.01..0.40; base.fc gain 1 (unused).
    The head, DCN and offset values were picked from a scan (head conv 1.2 / 1.7 / 2.4, hm
    0.7 / 1 / 1.4, hm bias +- 0.25 / 0.5 / 1, head conv bias +- 0.1 / 0.5, DCN 2.6 / 2.7 /
    2.8, offset 0.55 / 0.8) for the largest smallest consecutive-score gap over both photos
    with at least 3 classes. The result (printed by the script; 0-based decode classes):
      chelsea: scores 0.7695..0.6694, 3 classes (27 tie 63, 39 bottle 31, 79 toothbrush 6);
      coffee: 0.9573..0.8351, 6 classes (27: 54, 39: 36, 79: 6, 37 surfboard: 2, 6 train: 1,
      62 tv: 1; one position holds both a tie and a bottle).
    All 100 of chelsea's peaks lie on output rows 106..113, the band of the bottom black bar
    just below the photo (content ends at row 106.6): boxes y 249..299 on a 264-row photo.
    That band, which sees the photo's bottom edge through the DCN offsets and the large
    receptive field, outscores the low-contrast photo for this random network in every
    setting scanned (at most 27 of 100 on the photo, always with much smaller gaps). Coffee:
    89 of 100 on rows 22..105.
    Margins (chelsea / coffee): top100_cut_gap 5.1e-4 / 7.2e-4; smallest gap between
    consecutive kept scores 1.7e-5 / 2.3e-5; heatmap values within 1e-6 below their 3x3
    maximum 71 / 52, none at or above the 101st score; above that score 497 / 953 values are
    suppressed, the nearest 1.1e-4 / 3.4e-5 below its neighbour; the kept top-100 peaks
    exceed their other 8 neighbours by at least the same 1.1e-4 / 3.4e-5; no plateaus.
  - Conditioning (as above; every level, dla_up entry and the features compared):
    f64_relative_error chelsea / coffee level0..5 1.8e-6 1.2e-6 2.2e-6 3.2e-6 3.8e-6 3.5e-6 /
    2.9e-6 2.0e-6 2.8e-6 3.1e-6 4.1e-6 4.8e-6, dla_up 4.1e-6 3.3e-6 4.7e-6 3.5e-6 / 4.6e-6
    5.1e-6 4.8e-6 4.8e-6, features 6.9e-6 / 6.2e-6, dcn1_offset 1.5e-6 / 1.6e-6, dcn1_mask
    3.5e-7 / 4.5e-7, hm 4.5e-6 / 7.2e-6, wh 1.0e-6 / 1.4e-6, reg 4.2e-7 / 6.4e-7, heat
    1.1e-6 / 1.7e-6; f64_decode: the same 100 (index, class) pairs in the same order, scores
    within 6.1e-7 / 5.2e-7 (28x / 45x below the smallest consecutive gap), boxes within 9.1e-6
    / 8.9e-6 output pixels.
  - JSON: the same layout as centernet_resdcn18.json (config, weights, not_generated, cases
    with warped, input, dcn1_offset, dcn1_mask, hm, wh, reg, decode, results, margins,
    f64_relative_error, f64_decode exactly as above), except: config has "dla" (levels,
    channels, block, residual_root, root_kernel_size, first_level, last_level, final_kernel,
    dla_up {startp, channels, scales, ida [{name, o, channels, up_f}]}, ida_up {name, o,
    channels, up_f}, up, deform_conv) instead of "deconv"; a top-level "unused_in_forward"
    {names, why}; per case, in place of layer4 / deconv1..3, the summaries level0..level5,
    dla_up (a list of 4 summaries, strides 4, 8, 16, 32) and features ([64, 128, 128]), in
    that order, and f64_relative_error has level0..level5, dla_up (a list of 4) and
    features in place of layer4 / deconv1..3. About 970 KB.

Multi-pose (`--task multi_pose --arch dla_34`, writes centernet_multi_pose_dla34.json). The
official human-pose task on the DLA-34 trunk above, with the same patches, checks and
conventions; written with `--threads 1` (about 15 s on the 2-core machine, float64 run
included; other thread counts change the last bits, see "Setup"):
    opt = opts().init(["multi_pose", "--arch", "dla_34", "--gpus", "-1"])
    detector = detector_factory["multi_pose"](opt)    # MultiPoseDetector
    ret = detector.run("assets/<photo>")               # results {1: 100 rows of 39 floats}
  - Options (asserted): opts.py sets, for multi_pose, heads {hm: 1, wh: 2, hps: 34} then
    reg: 2 (reg_offset on), hm_hp: 17 (hm_hp = not --not_hm_hp) and hp_offset: 2
    (reg_hp_offset = not --not_reg_hp_offset and hm_hp), in that order (which is also the
    order DLASeg registers the heads and the state dict lists them); head_conv 256; dataset
    info of init(): num_classes 1, num_joints 17, the ctdet mean / std, 512 x 512, flip_idx
    [[1, 2], [3, 4], ..., [15, 16]] (unused: flip_test off), dataset "coco_hp"; mse_loss off,
    dense_hp off, K 100, test_scales [1], nms off, debug 0. The pre-processing, meta and the
    DLA-34 trunk are exactly those of ctdet (the same input tensor; with the same weights and
    thread count the same features as the ctdet dla34 run, and the same f64 errors up to the
    features). Every head is Sequential(Conv2d(64, 256, 3, pad 1, bias), ReLU, Conv2d(256, n,
    1, bias)) on the features; DLASeg fills the last bias of every head whose name contains
    "hm" (hm and hm_hp) with -2.19 at construction (overwritten by load_model).
  - MultiPoseDetector.process: output = model(images)[-1]; output["hm"].sigmoid_();
    output["hm_hp"].sigmoid_() (hm_hp and not mse_loss); dets = multi_pose_decode(hm, wh,
    hps, reg=reg, hm_hp=hm_hp, hp_offset=hp_offset, K=100) (flip_test off: no averaging).
    multi_pose_decode (models/decode.py; J = 17, K = 100, 128 x 128), step by step:
      1. heat = _nms(hm) (3x3 max-pool equality, as ctdet); scores, inds, clses, ys, xs =
         _topk(heat, K) (one class: the 100 largest of the 16384; class 0 everywhere).
      2. kps = hps gathered at inds ([K, 34], channel 2j = dx, 2j + 1 = dy of joint j), then
         kps[:, 2j] += xs and kps[:, 2j + 1] += ys: the regressed joints are relative to the
         integer peak (before reg).
      3. reg and wh gathered at inds; x = xs + reg[0], y = ys + reg[1]; box [x - w / 2, y - h /
         2, x + w / 2, y + h / 2] (as ctdet).
      4. hm_hp = _nms(hm_hp) per joint channel; hm_score, hm_inds, hm_ys, hm_xs =
         _topk_channel(hm_hp, K): per channel torch.topk of the 16384 values (K 100),
         inds % 16384 (a no-op), ys = (inds / 128).int().float(), xs = (inds % 128).int()
         .float(): 17 x 100 candidates in descending score order.
      5. hp_offset (2 channels, shared by all 17 joints) gathered at hm_inds: hm_xs += off[0],
         hm_ys += off[1], for every candidate (also those about to be dropped). Two joints
         with candidates on the same pixel get the same position.
      6. mask = hm_score > 0.1 (float32 comparison: the threshold is float32(0.1)); hm_score =
         (1 - mask) * -1 + mask * hm_score; hm_xs = (1 - mask) * -10000 + mask * hm_xs, hm_ys
         likewise: a candidate at or below 0.1 becomes the sentinel (-10000, -10000) with
         score -1 (exact: 1 * v + 0 * w and 0 * v + w are exact for finite v, w).
      7. dist[j, k, i] = sqrt(((reg_kps[j, k] - hm_kps[j, i]) ** 2).sum()) in float32 (joint
         j of detection k to candidate i of channel j); min_dist, min_ind = dist.min(dim=3).
         torch.min's rule for equal values: the first index (documented by torch and checked,
         check_min_tie_rule). Ties only happen here when a channel has no candidate above 0.1:
         all 100 distances to the sentinel are equal, min_ind = 0 (asserted); the result does
         not depend on it (step 8 keeps the regressed joint). No real-candidate ties occur in
         these cases (argmin_ties_real 0).
      8. hm_score, hm_kps gathered at min_ind (the `hm_score` gather: the nearest candidate's
         score, -1 for the sentinel). mask = hm_kps x < l or x > r or y < t or y > b (strict:
         a joint on the box edge is inside) or hm_score < 0.1 (only the sentinel, whose score
         is -1) or min_dist > 0.3 * max(b - t, r - l) (strict; box of detection k, output
         pixels); kps = (1 - mask) * hm_kps + mask * kps: where mask is false the joint snaps
         to that hm_hp candidate ("snapped"), where true it keeps the regressed position
         ("kept"). (The official code sums the boolean terms and tests > 0: their union.)
      9. detections [1, 100, 40] = box (4), score, 17 x (x, y) (output pixels), class (0.).
    `multi_pose_steps` redoes steps 1-9 with the same tensor operations (asserted equal to the
    detector's dets, bit for bit) to keep the intermediates for the fixture and the margins;
    check_multi_pose_constants asserts that the official source holds `thresh = 0.1`, the -1
    and -10000 sentinels, the 0.3 factor and the two sigmoid_() calls.
  - post_process: multi_pose_post_process(dets (float32 numpy copy), [c], [s], 128, 128):
    transform_preds of the box corners and of the 17 joints (each point np.dot(trans_output_inv,
    float32 [x, y, 1]) in float64, as ctdet), concatenated with the float32 score into a
    float64 array, .astype(float32).tolist(), under the key np.int32(1); then
    np.array(float32).reshape(-1, 39), [:, :4] /= 1, [:, 5:] /= 1. So each coordinate is
    float32(float64 affine map of the float32 output coordinate), asserted against a direct
    computation. merge_outputs: results[1] = the one scale's rows as float32 (soft_nms_39 only
    for opt.nms or several scales), .tolist(); no max_per_image cut (unlike ctdet). Row r is
    detection r of the decode (descending score): [x1, y1, x2, y2, score, x_0, y_0, ...,
    x_16, y_16] in photo pixels; COCO category 1 (person) for all. Joints are not clipped.
  - State dict: 412 entries, 357 generated floating tensors (20,644,930 values), the same 55
    num_batches_tracked and the same 14 unused trunk tensors as dla34. The heads' names:
      hm.0.{weight [256, 64, 3, 3], bias [256]}, hm.2.{weight [1, 256, 1, 1], bias [1]},
      wh.0.*, wh.2.{weight [2, 256, 1, 1], bias [2]}, hps.0.{weight [256, 64, 3, 3], bias
      [256]}, hps.2.{weight [34, 256, 1, 1], bias [34]}, reg.0.*, reg.2.{weight [2, 256, 1,
      1], bias [2]}, hm_hp.0.{weight [256, 64, 3, 3], bias [256]}, hm_hp.2.{weight [17, 256,
      1, 1], bias [17]}, hp_offset.0.{weight [256, 64, 3, 3], bias [256]}, hp_offset.2.{weight
      [2, 256, 1, 1], bias [2]}.
  - Weights (range_of_multi_pose): range_of_dla for every trunk tensor and for wh.* / reg.*
    (the same names, shapes and ranges as the ctdet dla34 fixture, so the same tensors, and
    the same wh / reg maps); the MP_* ranges for the rest, picked from a scan of about 70
    settings (run on the trunk's features with the heads alone) for: distinct person peaks
    (top-100 cut, consecutive scores, NMS), keypoint channels with candidates above and below
    0.1, both snapping branches, and no decisive near-tie in the keypoint decisions:
      MP_HM_CONV_GAIN 1.2, hm.0.bias +- 0.5 (with ctdet's 1.7 / +- 0.1 and this one class,
        the ctdet class-0 weights, the 100 scores had consecutive gaps of 1.1e-6);
        MP_HM_GAIN 2.5, hm.2.bias -3.19 +- 0.5 (the official fill -2.19 minus 1): hm logits
        -3.20..0.20 / -3.21..1.72 (chelsea / coffee);
      MP_HEAD_CONV_GAIN 1.7 (hps.0, hp_offset.0), their first biases +- 0.1;
      MP_HPS_GAIN 1, hps.2.bias +- 3 output pixels: hps -4.4..5.9 / -6.4..8.8 (wh 6.4..14.2;
        gain 2 and +- 5 put more joints outside their box: about half as many snapped);
      MP_HM_HP_CONV_GAIN 1.7, hm_hp.0.bias -0.75 +- 0.1 (sparser ReLU pattern), MP_HM_HP_GAIN
        4, hm_hp.2.bias -4.19 +- 0.5 (fill minus 2): hm_hp logits -13.3..1.6 / -16.2..6.8.
        Each channel's level is set mostly by its weights' sum against the mean hidden
        activation, so channels are either above 0.1 at all their 100 peaks, partly, or
        nowhere, in every setting scanned;
      MP_HP_OFFSET_GAIN 0.1, hp_offset.2.bias 0.5 +- 0.2: hp_offset 0.42..0.78 (as reg).
    The result (printed by the script): chelsea scores 0.5491..0.3216, peaks on rows 104..117
      (4 on rows 22..105: as in ctdet, the band below the photo wins); coffee 0.8478..0.6558,
      86 on rows 22..105. Candidates above 0.1 per joint channel (of the 100): chelsea [35,
      100, 5, 67, 100, 0, 100, 0, 100, 0, 0, 0, 100, 47, 100, 0, 0], coffee [100, 100, 96, 92,
      100, 0, 100, 0, 100, 5, 0, 0, 100, 100, 100, 0, 25]. Of the 1700 joints: chelsea 266
      snapped, 1434 kept (700 with no candidate in their channel, 624 with the nearest
      candidate outside the box, 591 too far, overlapping); coffee 225 snapped, 1475 kept
      (500, 845, 809).
    Margins (`margins`: the ctdet keys for hm, then): hm (chelsea / coffee) top100_cut_gap
      2.7e-4 / 4.0e-4, consecutive 3.4e-5 / 2.4e-5, no NMS near-tie, top100_min_peak_gap
      3.6e-5 / 5.3e-4; hm_hp: hm_hp_min_thresh_gap (|v - 0.1| over every channel's 101
      largest kept values) 2.7e-5 / 7.9e-5; hm_hp_joints_cut_above_thresh (channels whose
      100th candidate is above 0.1, so the top-100 cut drops real candidates) 6 / 8, with
      hm_hp_min_topk_cut_gap_above_thresh 2.9e-5 / 1.0e-4; among values that would be
      candidates if kept (> 0.1 and >= their channel's 101st), no NMS near-tie (1e-6), the
      nearest suppressed one 1.7e-5 / 8.0e-5 below its 3x3 maximum, and the kept candidates
      exceed their other 8 neighbours by at least 1.7e-5 / 2.4e-5 (hm_hp_min_peak_gap_
      candidates); snapping: snap_min_argmin_gap (smallest second-best minus best distance
      over snapped joints) 3.7e-3 / 1.1e-3 output pixels; argmin_min_gap_real (every joint
      whose nearest candidate is real) 8.9e-4 / 1.1e-3; argmin_decisive (joints where the
      second-nearest candidate would give another result: every snapped joint, and kept ones
      whose second would snap) 300 / 254, smallest gap 3.7e-3 / 1.1e-3; the nearest
      candidates' distance to the box edges at least 4.2e-3 / 8.1e-4, |min_dist - 0.3 *
      max(h, w)| at least 7.3e-3 / 1.7e-2. The hm_hp margins are the thinnest: 7.7x / 5.2x
      the largest float32 vs float64 difference of the hm_hp sigmoid anywhere on the map
      (2.2e-6 / 4.6e-6); the snapping margins are 60x or more the joints' differences.
  - Conditioning: f64_relative_error has the trunk's entries (as dla34: level0..5, dla_up,
    features, dcn1_offset, dcn1_mask), every head (hm 5.2e-6 / 8.1e-6, wh 6.8e-7 / 1.3e-6,
    hps 4.1e-6 / 6.2e-6, reg 3.3e-7 / 6.3e-7, hm_hp 9.5e-6 / 1.9e-5, hp_offset 3.8e-7 /
    4.9e-7), heat 1.2e-6 / 1.9e-6 and hm_hp_sigmoid 2.2e-6 / 4.6e-6; f64_decode: the same
    100 peaks, the same hm_hp candidates above 0.1 (as pixel sets per channel), the same
    snapping (mask and chosen pixel), scores within 9.8e-7 / 1.5e-6, boxes within 8.3e-6 /
    9.0e-6 and joints within 7.6e-6 / 1.2e-5 output pixels.
  - JSON: generator, reference, config (config_of's entries for dla_34 with args, task,
    heads {hm: 1, wh: 2, hps: 34, reg: 2, hm_hp: 17, hp_offset: 2}, head_conv 256,
    num_classes 1, K 100; plus dataset, num_joints 17, flip_idx, hm_hp, reg_hp_offset,
    mse_loss, dense_hp, sigmoid ["hm", "hm_hp"], decode {hm_hp_nms_kernel 3, hm_hp_topk 100,
    hm_hp_thresh 0.1, dist_factor 0.3, sentinel_position -10000, sentinel_score -1,
    argmin_tie_rule}, results_class 1, category_id 1; max_per_image is BaseDetector's, unused
    by this merge_outputs), class_names ["person"], dcn_check, weights, not_generated,
    unused_in_forward, cases (the same two photos, the same warped images and hashes), each:
    photo .. warped as in the other fixtures; summaries input (the same as dla34's: the same
    rng), features, then the raw heads hm [1, 128, 128], wh [2, ...], hps [34, ...], reg,
    hm_hp [17, ...] (logits, before the sigmoid), hp_offset; decode: the 100 detections in
    decode order: score, class 0, index (y * 128 + x of the peak), x / y (peak + reg), box
    [x1, y1, x2, y2], kps [[x, y] x 17] (after the snapping), snapped [17 x 0 / 1] (1: the
    joint took its hm_hp candidate), all in output pixels; results: the 100 rows of
    results[1] in order: box [x1, y1, x2, y2], score, kps [[x, y] x 17], photo pixels (float32
    values); margins; f64_relative_error; f64_decode {same_indices_and_classes,
    same_hm_hp_candidates, same_snapping, max_abs_score_diff, max_abs_box_diff,
    max_abs_kps_diff}. About 1020 KB (the two PNGs are 650 KB of it).
"""

import argparse
import ast
import base64
import copy
import hashlib
import inspect
import json
import math
import os
import subprocess
import sys
import tempfile
import time
import types

import cv2
import numpy as np
import torch
import torchvision
from torch.nn import functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from make_maskrcnn_fixtures import generate  # noqa: E402  (fnv1a64 + splitmix_uniform)

ROOT = os.path.normpath(os.path.join(HERE, "..", ".."))
OUT = os.path.join(ROOT, "plugins", "centernet", "tests", "fixtures")
CENTERNET_REPO = os.environ.get("CENTERNET_REPO", "/tmp/centernet")
CENTERNET_COMMIT = "4c50fd3a46bdf63dbf2082c5cbb3458d39579e6c"
CENTERNET_GIT_DIR = os.environ.get("CENTERNET_GIT_DIR", "/work/.mirror/xingyizhou+CenterNet/repo")
# The DCNv2 sources read to establish the semantics the torchvision substitute must match.
DCN_SOURCES = [
    "src/lib/models/networks/DCNv2/src/dcn_v2.c",
    "src/lib/models/networks/DCNv2/src/dcn_v2_cuda.c",
    "src/lib/models/networks/DCNv2/src/cuda/dcn_v2_im2col_cuda.cu",
]
ARGS = ["ctdet", "--arch", "resdcn_18", "--gpus", "-1"]
PHOTOS = ["chelsea.png", "coffee.png"]
SAMPLES = 256
HM_BIAS_FILL = -2.19  # resnet_dcn.py: fc[-1].bias.data.fill_(-2.19) for the hm head

# Tuned ranges (see the docstring): a gain g gives a = float32(g * sqrt(3 / fan_in)), b = 0; a
# pair is (a, b).
BACKBONE_CONV_GAIN = 1.3  # conv1, layerN.M.conv1/conv2, layerN.0.downsample.0 weights
DCN_GAIN = 3.0  # deconv_layers.{0,6,12}.weight (the DCN's own 3x3 weight)
UP_GAIN = 1.6  # deconv_layers.{3,9,15}.weight (ConvTranspose2d; fan-in in_channels * 4)
OFFSET_GAIN = 0.55  # deconv_layers.{0,6,12}.conv_offset_mask.weight
OFFSET_BIAS = (0.5, 0.0)  # deconv_layers.{0,6,12}.conv_offset_mask.bias (a, b)
HEAD_CONV_GAIN = 1.7  # hm.0.weight, wh.0.weight, reg.0.weight (3x3, 64 -> 64)
HM_GAIN = 1.0  # hm.2.weight
HM_BIAS = (0.5, HM_BIAS_FILL)  # hm.2.bias (a, b)
WH_GAIN = 2.0  # wh.2.weight
WH_BIAS = (4.0, 12.0)  # wh.2.bias (a, b): box sizes in output (stride 4) pixels
REG_GAIN = 0.1  # reg.2.weight
REG_BIAS = (0.2, 0.5)  # reg.2.bias (a, b): sub-pixel centre offsets

# --arch dla_34 (see "DLA-34" in the docstring): the same conventions, its own tuned ranges.
DLA_ARGS = ["ctdet", "--arch", "dla_34", "--gpus", "-1"]
DLA_BODY_CONV_GAIN = 1.5  # every base.* conv (base_layer, levels, blocks, roots, projections)
DLA_DCN_GAIN = 2.7  # {dla_up.ida_k,ida_up}.{proj,node}_i.conv.weight (the DCN's 3x3 weight)
DLA_UP_FAN_IN = 4  # up_i (depthwise ConvTranspose2d, kernel 2f, stride f): 2 x 2 taps of 1 channel
DLA_UP_RANGE = (0.1, 1.0 / DLA_UP_FAN_IN)  # up_i.weight (a, b): taps 0.25 +- 0.1, sum ~1
DLA_OFFSET_GAIN = 0.8  # *.conv.conv_offset_mask.weight
DLA_OFFSET_BIAS = (0.5, 0.0)  # *.conv.conv_offset_mask.bias (a, b)
DLA_HEAD_CONV_GAIN = 1.7  # hm.0.weight, wh.0.weight, reg.0.weight (3x3, 64 -> 256)
DLA_HM_GAIN = 1.0  # hm.2.weight (1x1, 256 -> 80)
DLA_HM_BIAS = (1.0, HM_BIAS_FILL)  # hm.2.bias (a, b)
DLA_WH_GAIN = 2.0  # wh.2.weight
DLA_WH_BIAS = (4.0, 12.0)  # wh.2.bias (a, b)
DLA_REG_GAIN = 0.1  # reg.2.weight
DLA_REG_BIAS = (0.2, 0.5)  # reg.2.bias (a, b)
DLA_FC_GAIN = 1.0  # base.fc.weight (the ImageNet classifier load_pretrained_model adds; unused)

# --task multi_pose (--arch dla_34; see "Multi-pose" in the docstring): the DLA-34 trunk's and
# the wh / reg heads' ranges are range_of_dla's (the same names and shapes, so the same tensors
# as the ctdet dla34 fixture's); hm (1 class) and the keypoint heads have their own.
MP_ARGS = ["multi_pose", "--arch", "dla_34", "--gpus", "-1"]
MP_HEADS = {"hm": 1, "wh": 2, "hps": 34, "reg": 2, "hm_hp": 17, "hp_offset": 2}  # opts' order
MP_HP_THRESH = 0.1  # multi_pose_decode: `thresh = 0.1` (hm_hp candidates; hm_score < thresh)
MP_HP_DIST_FACTOR = 0.3  # multi_pose_decode: min_dist > max(b - t, r - l) * 0.3 keeps hps
MP_HM_CONV_GAIN = 1.2  # hm.0.weight (3x3, 64 -> 256)
MP_HM_CONV_BIAS = (0.5, 0.0)  # hm.0.bias (a, b)
MP_HM_GAIN = 2.5  # hm.2.weight (1x1, 256 -> 1)
MP_HM_BIAS = (0.5, -3.19)  # hm.2.bias (a, b): the official fill -2.19, minus 1
MP_HEAD_CONV_GAIN = 1.7  # hps.0.weight, hp_offset.0.weight (3x3, 64 -> 256)
MP_HPS_GAIN = 1.0  # hps.2.weight (1x1, 256 -> 34)
MP_HPS_BIAS = (3.0, 0.0)  # hps.2.bias (a, b): joint offsets from the peak, output pixels
MP_HM_HP_CONV_GAIN = 1.7  # hm_hp.0.weight (3x3, 64 -> 256)
MP_HM_HP_CONV_BIAS = (0.1, -0.75)  # hm_hp.0.bias (a, b)
MP_HM_HP_GAIN = 4.0  # hm_hp.2.weight (1x1, 256 -> 17)
MP_HM_HP_BIAS = (0.5, -4.19)  # hm_hp.2.bias (a, b): the official fill -2.19, minus 2
MP_HP_OFFSET_GAIN = 0.1  # hp_offset.2.weight (1x1, 256 -> 2)
MP_HP_OFFSET_BIAS = (0.2, 0.5)  # hp_offset.2.bias (a, b): sub-pixel joint offsets

for _path in (CENTERNET_REPO,):
    if not os.path.isdir(_path):
        sys.exit(f"no source tree at {_path}: see the docstring")


# --------------------------------------------------------------------------------------
# Patches and stubs, installed before any CenterNet module is imported (see the docstring).

DCN_CALLS = []  # (offset, mask) passed to the backend, while _recording["on"]
_recording = {"on": False}


def dcn_v2_cuda_forward(
    input, weight, bias, ones, offset, mask, output, columns,
    kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w, dilation_h, dilation_w,
    deformable_group,
):
    """src/dcn_v2_cuda.c `dcn_v2_cuda_forward` (the compiled `_ext.dcn_v2` entry point) on the
    CPU: output <- modulated deformable convolution, by torchvision.ops.deform_conv2d."""
    assert tuple(weight.shape[2:]) == (kernel_h, kernel_w)
    assert offset.shape[1] == deformable_group * 2 * kernel_h * kernel_w
    assert mask.shape[1] == deformable_group * kernel_h * kernel_w
    if _recording["on"]:
        DCN_CALLS.append((offset.clone(), mask.clone()))
    out = torchvision.ops.deform_conv2d(
        input, offset, weight, bias,
        stride=(stride_h, stride_w), padding=(pad_h, pad_w), dilation=(dilation_h, dilation_w),
        mask=mask,
    )
    output.resize_(out.shape).copy_(out)


class DCNv2FunctionCPU:
    """dcn_v2_func.DCNv2Function.forward, minus its `if not input.is_cuda: raise
    NotImplementedError` and the legacy (PyTorch 0.4, non-static) autograd.Function machinery
    that current PyTorch refuses to call; the same arguments go to the same backend entry."""

    def __init__(self, stride, padding, dilation=1, deformable_groups=1):
        self.stride = stride
        self.padding = padding
        self.dilation = dilation
        self.deformable_groups = deformable_groups

    def __call__(self, input, offset, mask, weight, bias):
        output = input.new(*self._infer_shape(input, weight))
        bufs = [input.new(), input.new()]
        _ext_dcn_v2.dcn_v2_cuda_forward(
            input, weight, bias, bufs[0], offset, mask, output, bufs[1],
            weight.shape[2], weight.shape[3], self.stride, self.stride,
            self.padding, self.padding, self.dilation, self.dilation, self.deformable_groups,
        )
        return output


def _stub(name: str, **attrs) -> types.ModuleType:
    module = types.ModuleType(name)
    module.__dict__.update(attrs)
    sys.modules[name] = module
    return module


_ext_dcn_v2 = _stub("models.networks.DCNv2._ext.dcn_v2", dcn_v2_cuda_forward=dcn_v2_cuda_forward)
_stub("models.networks.DCNv2._ext", dcn_v2=_ext_dcn_v2)
STUBBED = ["models.networks.DCNv2._ext (fake compiled DCNv2 extension)"]
try:
    import progress.bar  # noqa: F401
except ImportError:
    _stub("progress.bar", Bar=object)
    _stub("progress", bar=sys.modules["progress.bar"])
    STUBBED.append("progress.bar (Bar, unused at inference)")
try:
    import matplotlib.pyplot  # noqa: F401
except ImportError:
    _stub("matplotlib.pyplot")
    _stub("matplotlib", pyplot=sys.modules["matplotlib.pyplot"])
    STUBBED.append("matplotlib.pyplot (stored by Debugger.__init__, unused at debug 0)")
if not torch.cuda.is_available():
    torch.cuda.synchronize = lambda device=None: None  # called by run() and process()

sys.path.insert(0, os.path.join(CENTERNET_REPO, "src"))  # what running src/demo.py does
import _init_paths  # noqa: E402,F401  (puts src/lib first on sys.path)

from opts import opts  # noqa: E402
from detectors.detector_factory import detector_factory  # noqa: E402
from models.decode import (  # noqa: E402
    _nms, _topk, _topk_channel, ctdet_decode, multi_pose_decode)
from models.utils import _transpose_and_gather_feat  # noqa: E402
from models.model import create_model  # noqa: E402
from detectors.multi_pose import MultiPoseDetector  # noqa: E402
from models.networks import pose_dla_dcn, resnet_dcn  # noqa: E402
from models.networks.DCNv2 import dcn_v2, dcn_v2_func  # noqa: E402
from utils.image import get_affine_transform  # noqa: E402

assert dcn_v2_func._backend is _ext_dcn_v2
dcn_v2.DCNv2Function = DCNv2FunctionCPU  # the name dcn_v2.DCN.forward calls
DCNv2FunctionCPU._infer_shape = dcn_v2_func.DCNv2Function._infer_shape  # the official helper
PRETRAINED_URLS = []


def _no_pretrained(url, *args, **kwargs):
    """PoseResNet.init_weights' ImageNet download, answered with an empty state dict (the
    model then keeps its constructed values; every tensor is replaced afterwards)."""
    PRETRAINED_URLS.append(url)
    return {}


resnet_dcn.model_zoo = types.SimpleNamespace(load_url=_no_pretrained)


def _dla34_imagenet_stub(url, *args, **kwargs):
    """DLA.load_pretrained_model's download of dla34-ba72cf86.pth (ImageNet), answered with a
    state dict of that file's names and shapes, all zeros: the DLA-34 body's tensors (no
    num_batches_tracked, as in a torch 0.4-era file; BatchNorm fills them in for a state dict
    without version metadata) and the 1000-class classifier fc.weight [1000, 512, 1, 1],
    fc.bias [1000], last. load_pretrained_model needs the entries: it sizes the `fc` it adds
    (base.fc, unused by DLA.forward) from the last one, then load_state_dict(strict=True)s
    the dict. Every tensor is replaced afterwards anyway."""
    PRETRAINED_URLS.append(url)
    body = pose_dla_dcn.DLA([1, 1, 1, 2, 2, 1], [16, 32, 64, 128, 256, 512])
    state = {k: torch.zeros_like(v) for k, v in body.state_dict().items()
             if not k.endswith("num_batches_tracked")}
    state["fc.weight"] = torch.zeros(1000, 512, 1, 1)
    state["fc.bias"] = torch.zeros(1000)
    return state


pose_dla_dcn.model_zoo = types.SimpleNamespace(load_url=_dla34_imagenet_stub)


# --------------------------------------------------------------------------------------


def check_sources():
    if not os.path.isdir(CENTERNET_GIT_DIR):
        print(f"note: no git mirror at {CENTERNET_GIT_DIR}; {CENTERNET_REPO} not verified")
        return 0
    listed = subprocess.run(
        ["git", f"--git-dir={CENTERNET_GIT_DIR}", "ls-tree", "-r", "--name-only",
         CENTERNET_COMMIT, "src"],
        check=True, capture_output=True, text=True,
    ).stdout.split()
    files = [p for p in listed if p.endswith(".py")] + DCN_SOURCES
    for path in files:
        want = subprocess.run(
            ["git", f"--git-dir={CENTERNET_GIT_DIR}", "show", f"{CENTERNET_COMMIT}:{path}"],
            check=True, capture_output=True,
        ).stdout
        with open(os.path.join(CENTERNET_REPO, path), "rb") as f:
            assert f.read() == want, f"{CENTERNET_REPO}/{path} differs from {CENTERNET_COMMIT}"
    ext = os.path.join(CENTERNET_REPO, "src/lib/models/networks/DCNv2/_ext")
    assert not os.path.exists(ext), f"{ext}: a built DCNv2 extension would not be used"
    return len(files)


def dcn_v2_im2col_reference(input, offset, mask, weight, bias, stride, pad, dil, groups):
    """A direct float64 numpy port of DCNv2's CUDA forward (src/cuda/dcn_v2_im2col_cuda.cu
    modulated_deformable_im2col_gpu_kernel + dmcn_im2col_bilinear, then src/dcn_v2_cuda.c's
    output = bias + weight @ columns), batch 1, used to check the torchvision substitute."""
    x, off, msk = input[0], offset[0], mask[0]
    c_in, height, width = x.shape
    c_out, _, kh, kw = weight.shape
    ho = (height + 2 * pad - (dil * (kh - 1) + 1)) // stride + 1
    wo = (width + 2 * pad - (dil * (kw - 1) + 1)) // stride + 1
    cols = np.zeros((c_in * kh * kw, ho * wo))
    h_in = (np.arange(ho) * stride - pad)[:, None]
    w_in = (np.arange(wo) * stride - pad)[None, :]
    for c in range(c_in):
        g = c // (c_in // groups)  # deformable group of channel c
        o = off[g * 2 * kh * kw:(g + 1) * 2 * kh * kw]
        m = msk[g * kh * kw:(g + 1) * kh * kw]
        for i in range(kh):
            for j in range(kw):
                k = i * kw + j
                h = h_in + i * dil + o[2 * k]  # channel 2k: dy
                w = w_in + j * dil + o[2 * k + 1]  # channel 2k + 1: dx
                valid = (h > -1) & (w > -1) & (h < height) & (w < width)
                h_low, w_low = np.floor(h).astype(int), np.floor(w).astype(int)
                lh, lw = h - h_low, w - w_low
                val = np.zeros_like(h)
                for dy, dx, wt in ((0, 0, (1 - lh) * (1 - lw)), (0, 1, (1 - lh) * lw),
                                   (1, 0, lh * (1 - lw)), (1, 1, lh * lw)):
                    yy, xx = h_low + dy, w_low + dx
                    ok = valid & (yy >= 0) & (xx >= 0) & (yy <= height - 1) & (xx <= width - 1)
                    val += np.where(ok, wt * x[c][yy.clip(0, height - 1), xx.clip(0, width - 1)], 0)
                cols[c * kh * kw + k] = (val * m[k]).reshape(-1)
    out = bias[:, None] + weight.reshape(c_out, -1) @ cols
    return out.reshape(1, c_out, ho, wo)


def check_dcn_semantics() -> dict:
    """torchvision.ops.deform_conv2d (what the patched backend calls) against the port above,
    in float64, on small maps with offsets of up to +-3 px (many samples partly or wholly
    outside), for 1 and 2 deformable groups (the second checks the group-outer layout)."""
    rng = np.random.default_rng(0)
    worst = 0.0
    for groups in (1, 2):
        x = rng.standard_normal((1, 4, 5, 6))
        w = rng.standard_normal((3, 4, 3, 3))
        b = rng.standard_normal(3)
        off = rng.uniform(-3, 3, (1, groups * 18, 5, 6))
        msk = rng.uniform(0, 1, (1, groups * 9, 5, 6))
        want = dcn_v2_im2col_reference(x, off, msk, w, b, 1, 1, 1, groups)
        t = [torch.from_numpy(v) for v in (x, off, msk, w, b)]
        got = torchvision.ops.deform_conv2d(t[0], t[1], t[3], t[4], stride=1, padding=1,
                                            dilation=1, mask=t[2]).numpy()
        worst = max(worst, float(np.abs(got - want).max()))
    assert worst < 1e-12, worst
    return {"deformable_groups": [1, 2], "max_abs_diff_float64": worst}


def warp_affine_float32(src: np.ndarray, trans: np.ndarray, size) -> np.ndarray:
    """What cv2.warpAffine(src, trans, size, flags=cv2.INTER_LINEAR) (BORDER_CONSTANT 0) is
    checked to compute for these photos (see the docstring): the inverse map in float64 (as
    OpenCV inverts it), cast to float32; per destination pixel sx = m0 * x + m1 * y + m2,
    sy = m3 * x + m4 * y + m5 (float32), x0 = floor(sx), ax = sx - x0 (likewise y), taps
    outside the image read 0, r = (v00 * (1 - ax) + v01 * ax) * (1 - ay) + (v10 * (1 - ax) +
    v11 * ax) * ay in float32, rounded half to even and saturated to uint8."""
    m = np.asarray(trans, np.float64).reshape(6).copy()
    d = m[0] * m[4] - m[1] * m[3]
    d = 1.0 / d if d != 0 else 0.0
    a11, a22 = m[4] * d, m[0] * d
    m[0], m[4] = a11, a22
    m[1] *= -d
    m[3] *= -d
    b1, b2 = -m[0] * m[2] - m[1] * m[5], -m[3] * m[2] - m[4] * m[5]
    m[2], m[5] = b1, b2
    m = m.astype(np.float32)
    width, height = size
    x = np.arange(width, dtype=np.float32)[None, :]
    y = np.arange(height, dtype=np.float32)[:, None]
    sx = m[0] * x + m[1] * y + m[2]
    sy = m[3] * x + m[4] * y + m[5]
    x0, y0 = np.floor(sx).astype(np.int64), np.floor(sy).astype(np.int64)
    ax, ay = (sx - x0)[..., None], (sy - y0)[..., None]
    h0, w0 = src.shape[:2]

    def tap(dy, dx):
        yy, xx = y0 + dy, x0 + dx
        inside = (yy >= 0) & (yy < h0) & (xx >= 0) & (xx < w0)
        v = src[yy.clip(0, h0 - 1), xx.clip(0, w0 - 1)]
        return np.where(inside[..., None], v, 0).astype(np.float32)

    one = np.float32(1)
    r = (tap(0, 0) * (one - ax) + tap(0, 1) * ax) * (one - ay) + (
        tap(1, 0) * (one - ax) + tap(1, 1) * ax) * ay
    return np.clip(np.rint(r), 0, 255).astype(np.uint8)


def f9(x) -> float:
    """9 significant digits (enough to round-trip a float32)."""
    return float(f"{float(x):.9g}")


def gain(g: float, fan_in: int) -> float:
    return float(np.float32(g * math.sqrt(3.0 / fan_in)))


def range_of(name: str, shape, kind: str) -> tuple:
    """(a, b) of a state-dict tensor: values uniform in [b - a, b + a). `kind` is the type of
    the module that owns it."""
    leaf = name.rsplit(".", 1)[1]
    if kind == "BatchNorm2d":
        if leaf == "running_var":
            return 0.5, 1.0
        if leaf == "weight":
            return 0.25, 0.75
        return 0.1, 0.0  # bias, running_mean
    if kind == "ConvTranspose2d":
        # weight [in, out, 4, 4], stride 2, padding 1: every output pixel receives 2 x 2 taps
        # of each input channel, so the fan-in used is in * 4 (torch's own fan-in formula,
        # weight.shape[1] * 4 * 4, is 4x that for these square layers).
        assert leaf == "weight" and shape[2:] == [4, 4], name
        return gain(UP_GAIN, shape[0] * 4), 0.0
    if len(shape) == 4:
        fan_in = int(np.prod(shape[1:]))
        if kind == "DCN":
            return gain(DCN_GAIN, fan_in), 0.0
        if name.endswith("conv_offset_mask.weight"):
            return gain(OFFSET_GAIN, fan_in), 0.0
        if name in ("hm.0.weight", "wh.0.weight", "reg.0.weight"):
            return gain(HEAD_CONV_GAIN, fan_in), 0.0
        if name == "hm.2.weight":
            return gain(HM_GAIN, fan_in), 0.0
        if name == "wh.2.weight":
            return gain(WH_GAIN, fan_in), 0.0
        if name == "reg.2.weight":
            return gain(REG_GAIN, fan_in), 0.0
        assert kind == "Conv2d", name
        assert not name.startswith(("deconv_layers.", "hm.", "wh.", "reg.")), name
        return gain(BACKBONE_CONV_GAIN, fan_in), 0.0
    if len(shape) == 1 and leaf == "bias":
        special = {
            "hm.2.bias": HM_BIAS,
            "wh.2.bias": WH_BIAS,
            "reg.2.bias": REG_BIAS,
        }
        if name.endswith("conv_offset_mask.bias"):
            return OFFSET_BIAS
        return special.get(name, (0.1, 0.0))  # DCN and head conv biases
    raise ValueError(f"no range for {name} {shape} ({kind})")


def range_of_dla(name: str, shape, kind: str) -> tuple:
    """range_of for --arch dla_34 (the same BatchNorm and bias conventions, the DLA gains)."""
    leaf = name.rsplit(".", 1)[1]
    if kind == "BatchNorm2d":
        if leaf == "running_var":
            return 0.5, 1.0
        if leaf == "weight":
            return 0.25, 0.75
        return 0.1, 0.0  # bias, running_mean
    if kind == "ConvTranspose2d":
        # up_i: weight [o, 1, 2f, 2f] (groups o): every output pixel receives 2 x 2 taps of its
        # own input channel, so the fan-in is 4 for f = 2 and f = 4 alike (torch's formula,
        # shape[1] * (2f)^2, gives 16 / 64).
        assert leaf == "weight" and shape[1] == 1 and shape[2] == shape[3], name
        return DLA_UP_RANGE
    if len(shape) == 4:
        fan_in = int(np.prod(shape[1:]))
        if kind == "DCN":
            return gain(DLA_DCN_GAIN, fan_in), 0.0
        if name.endswith("conv_offset_mask.weight"):
            return gain(DLA_OFFSET_GAIN, fan_in), 0.0
        if name in ("hm.0.weight", "wh.0.weight", "reg.0.weight"):
            return gain(DLA_HEAD_CONV_GAIN, fan_in), 0.0
        if name == "hm.2.weight":
            return gain(DLA_HM_GAIN, fan_in), 0.0
        if name == "wh.2.weight":
            return gain(DLA_WH_GAIN, fan_in), 0.0
        if name == "reg.2.weight":
            return gain(DLA_REG_GAIN, fan_in), 0.0
        if name == "base.fc.weight":
            return gain(DLA_FC_GAIN, fan_in), 0.0
        assert kind == "Conv2d" and name.startswith("base."), name
        return gain(DLA_BODY_CONV_GAIN, fan_in), 0.0
    if len(shape) == 1 and leaf == "bias":
        special = {
            "hm.2.bias": DLA_HM_BIAS,
            "wh.2.bias": DLA_WH_BIAS,
            "reg.2.bias": DLA_REG_BIAS,
        }
        if name.endswith("conv_offset_mask.bias"):
            return DLA_OFFSET_BIAS
        return special.get(name, (0.1, 0.0))  # DCN, head conv and base.fc biases
    raise ValueError(f"no range for {name} {shape} ({kind})")


def range_of_multi_pose(name: str, shape, kind: str) -> tuple:
    """range_of for --task multi_pose (--arch dla_34): range_of_dla for the trunk and the heads
    ctdet shares (hm.0, wh.0 / wh.2, reg.0 / reg.2: the same names and shapes, so the same
    values), the MP_* ranges for hm.2 (1 class) and the keypoint heads hps, hm_hp, hp_offset."""
    special = {
        "hm.0.weight": ("gain", MP_HM_CONV_GAIN), "hm.0.bias": MP_HM_CONV_BIAS,
        "hm.2.weight": ("gain", MP_HM_GAIN), "hm.2.bias": MP_HM_BIAS,
        "hps.0.weight": ("gain", MP_HEAD_CONV_GAIN), "hps.2.weight": ("gain", MP_HPS_GAIN),
        "hps.2.bias": MP_HPS_BIAS,
        "hm_hp.0.weight": ("gain", MP_HM_HP_CONV_GAIN), "hm_hp.0.bias": MP_HM_HP_CONV_BIAS,
        "hm_hp.2.weight": ("gain", MP_HM_HP_GAIN),
        "hm_hp.2.bias": MP_HM_HP_BIAS,
        "hp_offset.0.weight": ("gain", MP_HEAD_CONV_GAIN),
        "hp_offset.2.weight": ("gain", MP_HP_OFFSET_GAIN), "hp_offset.2.bias": MP_HP_OFFSET_BIAS,
    }
    if name not in special:
        if name.startswith(("hps.", "hm_hp.", "hp_offset.")):
            assert name.endswith(".0.bias") and len(shape) == 1, name
            return 0.1, 0.0  # the new heads' first conv bias, as every head's
        return range_of_dla(name, shape, kind)
    value = special[name]
    if value[0] == "gain":
        assert kind == "Conv2d" and len(shape) == 4, name
        return gain(value[1], int(np.prod(shape[1:]))), 0.0
    assert len(shape) == 1, name
    return value


def summary(t: torch.Tensor, rng: np.random.Generator, channel_axis: int = 0) -> dict:
    """make_maskrcnn_fixtures.summary (floats to 9 digits); channel_means over `channel_axis`."""
    a = t.detach().cpu().numpy().astype(np.float32)
    flat = a.reshape(-1)
    idx = np.unique(np.concatenate([[0, flat.size - 1], rng.integers(0, flat.size, SAMPLES)]))
    moved = np.moveaxis(a, channel_axis, 0)
    per_channel = moved.reshape(moved.shape[0], -1).astype(np.float64).mean(axis=1)
    return {
        "shape": list(a.shape),
        "channel_axis": channel_axis,
        "sum": f9(flat.astype(np.float64).sum()),
        "abs_sum": f9(np.abs(flat.astype(np.float64)).sum()),
        "min": f9(flat.min()),
        "max": f9(flat.max()),
        "channel_means": [f9(x) for x in per_channel],
        "indices": [int(i) for i in idx],
        "values": [f9(flat[i]) for i in idx],
    }


def coco_ids_and_names() -> tuple:
    """COCO._valid_ids and COCO.class_name (both set in COCO.__init__, which reads the
    annotation files), read from src/lib/datasets/dataset/coco.py without running it."""
    path = os.path.join(CENTERNET_REPO, "src/lib/datasets/dataset/coco.py")
    with open(path) as f:
        tree = ast.parse(f.read())
    found = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and len(node.targets) == 1:
            t = node.targets[0]
            if isinstance(t, ast.Attribute) and t.attr == "_valid_ids":
                found["ids"] = ast.literal_eval(node.value)
            if isinstance(t, ast.Attribute) and t.attr == "class_name":
                found["names"] = ast.literal_eval(node.value)
    ids, names = found["ids"], found["names"]
    assert len(ids) == 80 and names[0] == "__background__" and len(names) == 81
    return ids, names[1:]


def build_opt(arch: str = "resdcn_18"):
    args = ARGS if arch == "resdcn_18" else DLA_ARGS
    opt = opts().init(args)
    assert opt.gpus == [-1] and opt.task == "ctdet" and opt.arch == arch
    assert opt.heads == {"hm": 80, "wh": 2, "reg": 2}
    assert opt.head_conv == (64 if arch == "resdcn_18" else 256)
    assert opt.fix_res and opt.input_h == opt.input_w == 512 and opt.down_ratio == 4
    assert opt.K == 100 and opt.reg_offset and not opt.flip_test and not opt.cat_spec_wh
    assert opt.test_scales == [1.0] and not opt.nms and opt.debug == 0
    return opt


def config_of(opt, detector) -> dict:
    config = {
        "args": ARGS if opt.arch == "resdcn_18" else DLA_ARGS,
        "task": opt.task,
        "arch": opt.arch,
        "heads": dict(opt.heads),
        "head_conv": opt.head_conv,
        "num_classes": opt.num_classes,
        "K": opt.K,
        "max_per_image": detector.max_per_image,
        "input_h": opt.input_h,
        "input_w": opt.input_w,
        "fix_res": opt.fix_res,
        "down_ratio": opt.down_ratio,
        "output_h": opt.output_h,
        "output_w": opt.output_w,
        "mean": [float(x) for x in opt.mean],
        "std": [float(x) for x in opt.std],
        "mean_float32": [float(x) for x in detector.mean.reshape(-1)],
        "std_float32": [float(x) for x in detector.std.reshape(-1)],
        "mean_std_channel_order": "BGR (the cv2.imread image)",
        "mean_std_dtype": "float32 (np.array(opt.mean, dtype=np.float32) in BaseDetector)",
        "reg_offset": opt.reg_offset,
        "flip_test": opt.flip_test,
        "cat_spec_wh": opt.cat_spec_wh,
        "test_scales": opt.test_scales,
        "nms": opt.nms,
        "nms_kernel": 3,
        "bn_eps": 1e-5,
        "dcn": {"kernel": 3, "stride": 1, "padding": 1, "dilation": 1, "deformable_groups": 1},
    }
    if opt.arch == "resdcn_18":
        config["deconv"] = {"planes": [256, 128, 64], "kernel": 4, "stride": 2, "padding": 1,
                            "output_padding": 0, "bias": False}
        return config
    model = detector.model
    config["dla"] = {
        "levels": [1, 1, 1, 2, 2, 1],
        "channels": list(model.base.channels),
        "block": "BasicBlock",
        "residual_root": False,
        "root_kernel_size": 1,
        "first_level": model.first_level,
        "last_level": model.last_level,
        "final_kernel": 1,
        # DLAUp(2, [64, 128, 256, 512], [1, 2, 4, 8]) (its .channels attribute reads [64, 64,
        # 64, 64] afterwards: __init__ rewrites in_channels, the same list object, in place).
        "dla_up": {"startp": model.dla_up.startp, "channels": [64, 128, 256, 512],
                   "scales": [1, 2, 4, 8],
                   "ida": [ida_config(getattr(model.dla_up, f"ida_{k}"), f"dla_up.ida_{k}")
                           for k in range(3)]},
        "ida_up": ida_config(model.ida_up, "ida_up"),
        "up": {"kernel": "2 * f", "stride": "f", "padding": "f // 2", "output_padding": 0,
               "groups": "o (depthwise)", "bias": False},
        "deform_conv": "DCN (with bias) -> BatchNorm2d -> ReLU",
    }
    return config


def ida_config(ida, name: str) -> dict:
    """IDAUp(o, channels, up_f) as built: o, the input channels of each level (the first one
    is not projected), the up-sampling factors, read from the modules."""
    n = 1 + sum(1 for k in ida._modules if k.startswith("proj_"))
    proj = [getattr(ida, f"proj_{i}").conv.weight for i in range(1, n)]
    up = [getattr(ida, f"up_{i}") for i in range(1, n)]
    o = proj[0].shape[0]
    return {"name": name, "o": o, "channels": [o] + [w.shape[1] for w in proj],
            "up_f": [1] + [u.stride[0] for u in up]}


def margins(heat: torch.Tensor, dets_scores: torch.Tensor) -> dict:
    """How far every discrete decision of ctdet_decode is from flipping (heat: the sigmoid
    heatmap [80, 128, 128] that _nms / _topk see)."""
    hmax = F.max_pool2d(heat[None], 3, stride=1, padding=1)[0]
    kept = heat * (hmax == heat).float()
    top = torch.topk(kept.reshape(-1), 101).values.double()
    assert torch.equal(top[:100].float(), dets_scores)
    cut = float(top[99] - top[100])
    consecutive = top[:100] - top[1:101]
    gap = (hmax - heat).double()
    suppressed = gap > 0
    near = suppressed & (gap < 1e-6)
    strong = heat.double() >= top[100]  # could enter the top 100 if kept
    # For each kept value: its margin above the other 8 values of its 3x3 window.
    pad = F.pad(heat[None], (1, 1, 1, 1), value=float("-inf"))[0]
    others = torch.stack(
        [pad[:, 1 + dy:1 + dy + heat.shape[1], 1 + dx:1 + dx + heat.shape[2]]
         for dy in (-1, 0, 1) for dx in (-1, 0, 1) if (dy, dx) != (0, 0)]
    ).amax(0)
    peak_gap = (heat - others).double()
    in_top = kept >= top[99].float()
    return {
        "top100_cut_gap": f9(cut),
        "score_100": f9(top[99]),
        "score_101": f9(top[100]),
        "min_consecutive_gap_top100": f9(consecutive[:99].min()),
        "nms_near_ties_1e-6": int(near.sum()),
        "nms_near_ties_1e-6_above_cut": int((near & strong).sum()),
        "nms_suppressed_above_cut": int((suppressed & strong).sum()),
        "nms_min_suppression_gap_above_cut": (
            f9(gap[suppressed & strong].min()) if bool((suppressed & strong).any()) else None
        ),
        "top100_min_peak_gap": f9(peak_gap[in_top].min()),
        "top100_plateaus": int((peak_gap[in_top] == 0).sum()),
    }


def generated_checkpoint(opt, range_fn=None) -> tuple:
    """(spec, not_generated, state) for opt.arch: every floating tensor of the model's state
    dict generated from its name (range_of / range_of_dla, or `range_fn`), the int64
    num_batches_tracked buffers kept at 0. `state` is what the checkpoint's "state_dict"
    holds."""
    range_fn = range_fn or (range_of_multi_pose if opt.task == "multi_pose"
                            else range_of if opt.arch == "resdcn_18" else range_of_dla)
    probe = create_model(opt.arch, opt.heads, opt.head_conv)
    kinds = {}
    for mname, module in probe.named_modules():
        for pname, _ in list(module.named_parameters(recurse=False)) + list(
            module.named_buffers(recurse=False)
        ):
            kinds[f"{mname}.{pname}" if mname else pname] = type(module).__name__
    spec, not_generated, state = [], [], {}
    for name, t in probe.state_dict().items():
        shape = list(t.shape)
        if name.endswith("num_batches_tracked"):
            assert t.dtype == torch.int64 and t.item() == 0
            not_generated.append(name)
            state[name] = t.clone()
            continue
        a, b = range_fn(name, shape, kinds[name])
        spec.append({"name": name, "shape": shape, "a": a, "b": b})
        state[name] = torch.from_numpy(generate(name, shape, a, b))
    del probe
    return spec, not_generated, state


def make_detector(opt, checkpoint: str):
    """The official CtdetDetector (create_model, load_model(checkpoint)) on the CPU."""
    opt.load_model = checkpoint
    detector = detector_factory[opt.task](opt)
    assert opt.device == torch.device("cpu") and not detector.model.training
    return detector


def check_structure(model, arch: str):
    """Cheap facts the docstring states."""
    bns = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    dcns = [m for m in model.modules() if isinstance(m, dcn_v2.DCN)]
    ups = [m for m in model.modules() if isinstance(m, torch.nn.ConvTranspose2d)]
    for m in dcns:
        assert m.kernel_size == (3, 3) and m.stride == 1 and m.padding == 1
        assert m.dilation == 1 and m.deformable_groups == 1
    assert all(m.eps == 1e-5 for m in bns)
    if arch == "resdcn_18":
        assert len(bns) == 20 + 6 and len(dcns) == 3
        assert len(ups) == 3 and all(
            m.kernel_size == (4, 4) and m.stride == (2, 2) and m.padding == (1, 1)
            and m.output_padding == (0, 0) and m.bias is None for m in ups
        )
        return
    assert isinstance(model, pose_dla_dcn.DLASeg)
    assert model.first_level == 2 and model.last_level == 5
    assert model.base.channels == [16, 32, 64, 128, 256, 512]
    assert model.dla_up.channels == [64, 64, 64, 64]  # rewritten in place by DLAUp.__init__
    assert [ida_config(getattr(model.dla_up, f"ida_{k}"), "")["channels"] for k in range(3)] == [
        [256, 512], [128, 256, 256], [64, 128, 128, 128]]
    assert ida_config(model.ida_up, "") == {
        "name": "", "o": 64, "channels": [64, 128, 256], "up_f": [1, 2, 4]}
    assert isinstance(model.base.fc, torch.nn.Conv2d) and model.base.fc.out_channels == 1000
    assert len(bns) == 39 + 16 and len(dcns) == 16 and len(ups) == 8
    for name, m in model.named_modules():
        if isinstance(m, torch.nn.ConvTranspose2d):
            f = 4 if name == "ida_up.up_2" else 2
            o = m.in_channels
            assert m.out_channels == o and m.groups == o and m.bias is None, name
            assert m.kernel_size == (2 * f, 2 * f) and m.stride == (f, f), name
            assert m.padding == (f // 2, f // 2) and m.output_padding == (0, 0), name
    assert all(isinstance(m, torch.nn.ReLU) and m.inplace
               for m in model.modules() if isinstance(m, torch.nn.ReLU))


DLA_UNUSED = ["base.fc.", "base.level3.project.", "base.level4.project."]
DLA_UNUSED_WHY = (
    "base.fc: the ImageNet classifier DLA.load_pretrained_model adds, never "
    "called by DLA.forward; base.level3.project / base.level4.project: computed "
    "by Tree.forward (levels 2) and passed to tree1, which recomputes its own "
    "residual with tree1.project (checked: changing them leaves every level "
    "bit-identical)")


def check_dla_unused(model) -> list:
    """The DLA-34 tensors that cannot change the model's outputs (see the docstring): with
    all of them replaced, DLA.forward's six levels are bit-identical on a random input;
    replacing a used one (base.level3.tree1.project.0.weight) changes them (so the check
    sees a change where one exists). Returns their names."""
    names = [k for k in model.state_dict() if k.startswith(tuple(DLA_UNUSED))]
    x = torch.from_numpy(np.random.default_rng(0).standard_normal((1, 3, 128, 128))
                         .astype(np.float32))
    with torch.no_grad():
        want = model.base(x)
        for changed, expect_same in ((names, True),
                                     (["base.level3.tree1.project.0.weight"], False)):
            base = copy.deepcopy(model.base)
            state = base.state_dict()
            for k in changed:
                t = state[k[len("base."):]]  # base's own state dict: names without "base."
                if t.is_floating_point():
                    t.mul_(-3.0).add_(0.5)  # in place: the state dict's tensors are base's
            got = base(x)
            same = all(torch.equal(a, b) for a, b in zip(got, want))
            assert same == expect_same, changed
    return names


def multi_pose_steps(heat, wh, kps, reg, hm_hp, hp_offset, K=100) -> dict:
    """models/decode.py multi_pose_decode (reg, hm_hp and hp_offset given, batch 1), step by
    step with the same tensor operations on the same shapes (so the same float32 values,
    asserted against the detector's dets), keeping the intermediates the fixture and its
    margins need. heat / hm_hp: after the sigmoid. Returns (J = 17 joints, K = 100):
    dets [K, 40]; scores, inds, xs, ys (integer peak) [K]; cx, cy (after reg) [K]; bboxes [K,
    4]; reg_kps [J, K, 2] (hps + peak); hm_score_raw, hm_inds [J, K] (_topk_channel of
    _nms(hm_hp)); cand [J, K] (hm_score > 0.1); hm_xy [J, K, 2] (peak + hp_offset, before
    the -10000 sentinel); dist [J, K, K] (regressed joint of detection k to candidate i);
    min_dist, min_ind [J, K]; hm_score [J, K] (gathered, -1 for a sentinel); hm_kps [J, K, 2]
    (gathered); box_out, low_score, too_far, keep_regressed [J, K] (the mask's terms and
    their union: True keeps the regressed joint); kps [K, J, 2] (final)."""
    batch, cat, height, width = heat.size()
    assert batch == 1 and cat == 1
    num_joints = kps.shape[1] // 2
    thresh = 0.1
    heat = _nms(heat)
    scores, inds, clses, ys, xs = _topk(heat, K=K)
    kps = _transpose_and_gather_feat(kps, inds)
    kps = kps.view(batch, K, num_joints * 2)
    kps[..., ::2] += xs.view(batch, K, 1).expand(batch, K, num_joints)
    kps[..., 1::2] += ys.view(batch, K, 1).expand(batch, K, num_joints)
    reg = _transpose_and_gather_feat(reg, inds)
    reg = reg.view(batch, K, 2)
    cx = xs.view(batch, K, 1) + reg[:, :, 0:1]
    cy = ys.view(batch, K, 1) + reg[:, :, 1:2]
    wh = _transpose_and_gather_feat(wh, inds)
    wh = wh.view(batch, K, 2)
    clses = clses.view(batch, K, 1).float()
    scores_k = scores.view(batch, K, 1)
    bboxes = torch.cat([cx - wh[..., 0:1] / 2, cy - wh[..., 1:2] / 2,
                        cx + wh[..., 0:1] / 2, cy + wh[..., 1:2] / 2], dim=2)
    hm_hp = _nms(hm_hp)
    kps = kps.view(batch, K, num_joints, 2).permute(0, 2, 1, 3).contiguous()  # b x J x K x 2
    reg_kps = kps.unsqueeze(3).expand(batch, num_joints, K, K, 2)
    hm_score, hm_inds, hm_ys, hm_xs = _topk_channel(hm_hp, K=K)  # b x J x K
    hm_score_raw = hm_score
    hp_off = _transpose_and_gather_feat(hp_offset, hm_inds.view(batch, -1))
    hp_off = hp_off.view(batch, num_joints, K, 2)
    hm_xs = hm_xs + hp_off[:, :, :, 0]
    hm_ys = hm_ys + hp_off[:, :, :, 1]
    hm_xy = torch.stack([hm_xs, hm_ys], dim=-1)
    mask = (hm_score > thresh).float()
    cand = mask > 0
    hm_score = (1 - mask) * -1 + mask * hm_score
    hm_ys = (1 - mask) * (-10000) + mask * hm_ys
    hm_xs = (1 - mask) * (-10000) + mask * hm_xs
    hm_kps = torch.stack([hm_xs, hm_ys], dim=-1).unsqueeze(2).expand(
        batch, num_joints, K, K, 2)
    dist = (((reg_kps - hm_kps) ** 2).sum(dim=4) ** 0.5)
    min_dist, min_ind = dist.min(dim=3)  # b x J x K
    hm_score = hm_score.gather(2, min_ind).unsqueeze(-1)  # b x J x K x 1
    min_dist = min_dist.unsqueeze(-1)
    min_ind4 = min_ind.view(batch, num_joints, K, 1, 1).expand(batch, num_joints, K, 1, 2)
    hm_kps = hm_kps.gather(3, min_ind4)
    hm_kps = hm_kps.view(batch, num_joints, K, 2)
    l = bboxes[:, :, 0].view(batch, 1, K, 1).expand(batch, num_joints, K, 1)  # noqa: E741
    t = bboxes[:, :, 1].view(batch, 1, K, 1).expand(batch, num_joints, K, 1)
    r = bboxes[:, :, 2].view(batch, 1, K, 1).expand(batch, num_joints, K, 1)
    b = bboxes[:, :, 3].view(batch, 1, K, 1).expand(batch, num_joints, K, 1)
    box_out = ((hm_kps[..., 0:1] < l) | (hm_kps[..., 0:1] > r)
               | (hm_kps[..., 1:2] < t) | (hm_kps[..., 1:2] > b))
    low_score = hm_score < thresh
    limit = torch.max(b - t, r - l) * 0.3
    too_far = min_dist > limit
    keep = box_out | low_score | too_far
    maskf = keep.float().expand(batch, num_joints, K, 2)
    final = (1 - maskf) * hm_kps + maskf * kps
    final_flat = final.permute(0, 2, 1, 3).contiguous().view(batch, K, num_joints * 2)
    dets = torch.cat([bboxes, scores_k, final_flat, clses], dim=2)
    edges = torch.cat([hm_kps[..., 0:1] - l, hm_kps[..., 0:1] - r,
                       hm_kps[..., 1:2] - t, hm_kps[..., 1:2] - b], dim=-1)
    return {
        "dets": dets[0], "scores": scores[0], "inds": inds[0], "clses": clses[0, :, 0],
        "xs": xs[0], "ys": ys[0], "cx": cx[0, :, 0], "cy": cy[0, :, 0], "bboxes": bboxes[0],
        "reg_kps": kps[0], "hm_score_raw": hm_score_raw[0], "hm_inds": hm_inds[0],
        "cand": cand[0], "hm_xy": hm_xy[0], "dist": dist[0], "min_dist": min_dist[0, ..., 0],
        "min_ind": min_ind[0], "hm_score": hm_score[0, ..., 0], "hm_kps": hm_kps[0],
        "box_out": box_out[0, ..., 0], "low_score": low_score[0, ..., 0],
        "too_far": too_far[0, ..., 0], "limit": limit[0, ..., 0],
        "edges": edges[0], "keep_regressed": keep[0, ..., 0],
        "kps": final[0].permute(1, 0, 2),
    }


def pose_margins(st: dict, hm_hp: torch.Tensor, K: int = 100) -> dict:
    """How far the keypoint decisions of multi_pose_decode are from flipping (st: the
    multi_pose_steps of the run; hm_hp: the sigmoid keypoint heatmaps [17, 128, 128])."""
    thresh = 0.1
    hmax = F.max_pool2d(hm_hp[None], 3, stride=1, padding=1)[0]
    kept = hm_hp * (hmax == hm_hp).float()
    top = torch.topk(kept.reshape(hm_hp.shape[0], -1), K + 1).values.double()  # [J, K + 1]
    assert torch.equal(top[:, :K].float(), st["hm_score_raw"])
    above = (st["hm_score_raw"] > thresh).sum(1)
    gap = (hmax - hm_hp).double()
    # Values that would be candidates if _nms kept them: above the threshold and at least the
    # joint's 101st kept value.
    high = (hm_hp.double() > thresh) & (hm_hp.double() >= top[:, K, None, None])
    suppressed_high = (gap > 0) & high
    pad = F.pad(hm_hp[None], (1, 1, 1, 1), value=float("-inf"))[0]
    others = torch.stack(
        [pad[:, 1 + dy:1 + dy + hm_hp.shape[1], 1 + dx:1 + dx + hm_hp.shape[2]]
         for dy in (-1, 0, 1) for dx in (-1, 0, 1) if (dy, dx) != (0, 0)]
    ).amax(0)
    peak_gap = (hm_hp - others).double()
    cand_peak = (kept > thresh) & (kept >= top[:, K - 1, None, None].float())
    cut_rows = top[:, K - 1] > thresh  # joints whose 100th candidate is above the threshold
    # The argmin over the K candidates: best vs second-best distance.
    two, second = torch.topk(st["dist"].double(), 2, dim=2, largest=False)  # [J, K, 2]
    argmin_gap = two[..., 1] - two[..., 0]
    real = st["hm_score"] > thresh  # the nearest candidate is a real one, not the sentinel
    # Would the second-nearest candidate give another result? (Always for a snapped joint;
    # for a kept one, where the second would snap.)
    i2 = second[..., 1]  # [J, K]
    xy2 = st["hm_xy"].gather(1, i2[..., None].expand(*i2.shape, 2))  # [J, K, 2]
    box = st["bboxes"]  # [K, 4]
    out2 = ((xy2[..., 0] < box[None, :, 0]) | (xy2[..., 0] > box[None, :, 2])
            | (xy2[..., 1] < box[None, :, 1]) | (xy2[..., 1] > box[None, :, 3]))
    keep2 = out2 | ~st["cand"].gather(1, i2) | (two[..., 1] > st["limit"].double())
    decisive = real & (~st["keep_regressed"] | ~keep2)
    snapped = ~st["keep_regressed"]
    kept_reg = st["keep_regressed"]
    none = lambda t: f9(t.min()) if t.numel() else None  # noqa: E731
    return {
        "hm_hp_candidates_above_thresh": [int(v) for v in above],
        "hm_hp_min_thresh_gap": f9((top - thresh).abs().min()),
        "hm_hp_joints_cut_above_thresh": int(cut_rows.sum()),
        "hm_hp_min_topk_cut_gap_above_thresh": none(
            (top[:, K - 1] - top[:, K])[cut_rows]),
        "hm_hp_nms_near_ties_1e-6_candidates": int((suppressed_high & (gap < 1e-6)).sum()),
        "hm_hp_nms_min_suppression_gap_candidates": none(gap[suppressed_high]),
        "hm_hp_min_peak_gap_candidates": none(peak_gap[cand_peak]),
        "joints": int(snapped.numel()),
        "joints_snapped": int(snapped.sum()),
        "joints_kept": int(kept_reg.sum()),
        "kept_no_candidate": int((kept_reg & ~real).sum()),
        "kept_outside_box": int((kept_reg & real & st["box_out"]).sum()),
        "kept_too_far": int((kept_reg & real & st["too_far"]).sum()),
        "kept_too_far_inside_box": int((kept_reg & real & st["too_far"] & ~st["box_out"]).sum()),
        "kept_outside_box_near_enough": int(
            (kept_reg & real & st["box_out"] & ~st["too_far"]).sum()),
        "snap_min_argmin_gap": none(argmin_gap[snapped]),
        "argmin_min_gap_real": none(argmin_gap[real]),
        "argmin_ties_real": int((argmin_gap[real] == 0).sum()),
        "argmin_decisive": int(decisive.sum()),
        "argmin_min_gap_decisive": none(argmin_gap[decisive]),
        "mask_min_box_edge_gap_real": none(st["edges"][real].double().abs()),
        "mask_min_dist_limit_gap_real": none(
            (st["min_dist"].double() - st["limit"].double())[real].abs()),
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--arch", choices=["resdcn_18", "dla_34", "all"], default="resdcn_18",
                    help="which fixture to write (all: both, resdcn_18 first)")
    ap.add_argument("--task", choices=["ctdet", "multi_pose"], default="ctdet",
                    help="ctdet (the default) or multi_pose (with --arch dla_34 only: writes "
                         "centernet_multi_pose_dla34.json)")
    ap.add_argument("--threads", type=int, default=2,
                    help="torch.set_num_threads (default 2; the float32 results depend on it "
                         "in the last bits, see the docstring)")
    args = ap.parse_args()
    if args.task == "multi_pose" and args.arch != "dla_34":
        ap.error("--task multi_pose needs --arch dla_34")
    torch.set_num_threads(args.threads)
    # OpenCV's own warpAffine kernel, not Intel IPP's (see "cv2.warpAffine" in the docstring).
    cv2.ipp.setUseIPP(False)
    checked = check_sources()
    dcn_check = check_dcn_semantics()
    if args.task == "multi_pose":
        write_multi_pose_fixture(checked, dcn_check)
        return
    valid_ids, class_names = coco_ids_and_names()
    archs = ["resdcn_18", "dla_34"] if args.arch == "all" else [args.arch]
    for arch in archs:
        write_fixture(arch, checked, dcn_check, valid_ids, class_names)


def register_keeps(m, store, dla, heads):
    """Forward hooks on model m that clone into `store` what the fixture summarises: the trunk's
    stages (dla: base -> "levels", dla_up -> "dla_up", the features ida_up fills in place,
    the heads' input; resdcn: layer4, deconv1..3), the first DCN's conv_offset_mask output
    ("offset_mask") and the raw output of each head in `heads`."""
    def keep(key):
        def hook(_module, _inputs, output):
            store[key] = output.clone()  # clone: ReLU(inplace) / hm.sigmoid_() follow

        return hook

    def keep_list(key):
        def hook(_module, _inputs, output):
            store[key] = [t.clone() for t in output]

        return hook

    def keep_features(_module, inputs, _output):
        store["features"] = inputs[0][-1].clone()  # ida_up(y, 0, 3) fills y in place

    def keep_head_input(_module, inputs):
        store["head_input"] = inputs[0].clone()

    if dla:
        m.base.register_forward_hook(keep_list("levels"))
        m.dla_up.register_forward_hook(keep_list("dla_up"))
        m.ida_up.register_forward_hook(keep_features)
        m.hm.register_forward_pre_hook(keep_head_input)
        m.dla_up.ida_0.proj_1.conv.conv_offset_mask.register_forward_hook(
            keep("offset_mask"))
    else:
        m.layer4.register_forward_hook(keep("layer4"))
        for i in range(3):
            m.deconv_layers[6 * i + 5].register_forward_hook(keep(f"deconv{i + 1}"))
        m.deconv_layers[0].conv_offset_mask.register_forward_hook(keep("offset_mask"))
    for head in heads:
        getattr(m, head).register_forward_hook(keep(head))


def load_generated(opt) -> tuple:
    """The generated checkpoint (generated_checkpoint), written in the format CenterNet's
    load_model reads and loaded by the official detector (make_detector), then checked (see
    the docstring). Returns (detector, spec, not_generated, unused)."""
    dla = opt.arch == "dla_34"
    PRETRAINED_URLS.clear()
    spec, not_generated, state = generated_checkpoint(opt)
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "model_generated.pth")
        torch.save({"epoch": 0, "state_dict": state}, path)
        detector = make_detector(opt, path)
    model = detector.model
    missing, unexpected = model.load_state_dict(state, strict=True)
    assert not missing and not unexpected
    for name, t in model.state_dict().items():  # the model holds exactly the generated tensors
        assert torch.equal(t, state[name]), name
    if dla:
        url = pose_dla_dcn.get_model_url("imagenet", "dla34", "ba72cf86")
        assert PRETRAINED_URLS == [url] * 2, PRETRAINED_URLS
    else:
        assert PRETRAINED_URLS == [resnet_dcn.model_urls["resnet18"]] * 2, PRETRAINED_URLS
    check_structure(model, opt.arch)
    unused = check_dla_unused(model) if dla else []
    return detector, spec, not_generated, unused


def double_copy(model):
    """A float64 deep copy (every floating parameter and buffer, asserted)."""
    model64 = copy.deepcopy(model).double()
    for key, t in list(model64.named_parameters()) + list(model64.named_buffers()):
        assert not t.is_floating_point() or t.dtype == torch.float64, key
    return model64


def check_pre_processing(detector, opt, rec, path) -> dict:
    """The pre-processing, redone step by step from the image run() read (rec["image"]) to
    keep the warped uint8 image, asserted to give exactly the tensor the model got
    (rec["images"]); also the PNG of the warped image and the float32-formula comparison."""
    image = rec["image"]
    h0, w0 = image.shape[:2]
    assert image.dtype == np.uint8 and image.shape[2] == 3
    assert np.array_equal(image, cv2.imread(path))
    meta = rec["meta"]
    c = np.array([w0 / 2.0, h0 / 2.0], dtype=np.float32)
    s = max(h0, w0) * 1.0
    assert np.array_equal(meta["c"], c) and meta["s"] == s
    assert meta["out_height"] == meta["out_width"] == 128
    trans_input = get_affine_transform(c, s, 0, [opt.input_w, opt.input_h])
    trans_output_inv = get_affine_transform(
        c, s, 0, (meta["out_width"], meta["out_height"]), inv=1)
    resized = cv2.resize(image, (w0, h0))
    assert np.array_equal(resized, image)  # scale 1: cv2.resize to the same size copies
    warped = cv2.warpAffine(
        resized, trans_input, (opt.input_w, opt.input_h), flags=cv2.INTER_LINEAR)
    norm = ((warped / 255.0 - detector.mean) / detector.std).astype(np.float32)
    images = rec["images"]
    assert images.dtype == torch.float32 and list(images.shape) == [1, 3, 512, 512]
    assert torch.equal(images[0], torch.from_numpy(norm.transpose(2, 0, 1).copy()))
    ok, png = cv2.imencode(".png", warped, [cv2.IMWRITE_PNG_COMPRESSION, 9])
    assert ok
    back = cv2.imdecode(png, cv2.IMREAD_UNCHANGED)
    assert np.array_equal(back, warped)
    raw = np.ascontiguousarray(warped).tobytes()
    formula = warp_affine_float32(image, trans_input, (opt.input_w, opt.input_h))
    formula_diff = int((formula != warped).sum())
    return {"image": image, "h0": h0, "w0": w0, "meta": meta, "c": c, "s": s,
            "trans_input": trans_input, "trans_output_inv": trans_output_inv, "warped": warped,
            "png": png, "raw": raw, "formula_diff": formula_diff, "images": images}


def case_header(photo, pp) -> dict:
    """A case's first entries (photo, geometry, the warped image), from check_pre_processing."""
    return {
        "photo": photo,
        "read": "cv2.imread(path) (BGR, uint8)",
        "original_size": [pp["h0"], pp["w0"]],
        "c": [float(v) for v in pp["c"]],
        "s": pp["s"],
        "trans_input": [[float(v) for v in row] for row in pp["trans_input"]],
        "trans_output_inv": [[float(v) for v in row] for row in pp["trans_output_inv"]],
        "out_size": [pp["meta"]["out_height"], pp["meta"]["out_width"]],
        "warped": {
            "shape": list(pp["warped"].shape),
            "layout": "HWC, BGR, uint8",
            "sha256": hashlib.sha256(pp["raw"]).hexdigest(),
            "fnv1a64": f"{fnv1a64_bytes(pp['raw']):016x}",
            "png_base64": base64.b64encode(pp["png"].tobytes()).decode(),
            "float32_formula_differing_bytes": pp["formula_diff"],
        },
    }


def first_dcn(captured, dla) -> tuple:
    """The first DCN's offset and mask, as DCN.forward derives them from conv_offset_mask
    (asserted equal to what reached the backend), and the trunk's shape checks."""
    om = captured["offset_mask"]
    o1, o2, mlogit = torch.chunk(om, 3, dim=1)
    offset = torch.cat((o1, o2), dim=1)[0]
    mask = torch.sigmoid(mlogit)[0]
    assert len(DCN_CALLS) == (16 if dla else 3)
    assert torch.equal(DCN_CALLS[0][0][0], offset) and torch.equal(DCN_CALLS[0][1][0], mask)
    if dla:
        levels, up = captured["levels"], captured["dla_up"]
        assert [list(t.shape[1:]) for t in levels] == [
            [16, 512, 512], [32, 256, 256], [64, 128, 128], [128, 64, 64], [256, 32, 32],
            [512, 16, 16]]
        assert [list(t.shape[1:]) for t in up] == [
            [64, 128, 128], [128, 64, 64], [256, 32, 32], [512, 16, 16]]
        assert torch.equal(up[3], levels[5])  # DLAUp's out starts as [layers[-1]]
        assert torch.equal(captured["features"], captured["head_input"])
    return offset, mask


def trunk_pairs(captured, captured64, dla, offset, mask) -> dict:
    """(float32, float64) pairs of the trunk's stages and the first DCN's offset / mask."""
    a1, a2, a3 = torch.chunk(captured64["offset_mask"], 3, dim=1)
    if dla:
        pairs = {f"level{i}": (captured["levels"][i], captured64["levels"][i])
                 for i in range(6)}
        pairs["dla_up"] = list(zip(captured["dla_up"], captured64["dla_up"]))
        pairs["features"] = (captured["features"], captured64["features"])
    else:
        pairs = {
            "layer4": (captured["layer4"], captured64["layer4"]),
            "deconv1": (captured["deconv1"], captured64["deconv1"]),
            "deconv2": (captured["deconv2"], captured64["deconv2"]),
            "deconv3": (captured["deconv3"], captured64["deconv3"]),
        }
    pairs.update({
        "dcn1_offset": (offset, torch.cat((a1, a2), dim=1)[0]),
        "dcn1_mask": (mask, torch.sigmoid(a3)[0]),
    })
    return pairs


def relative_errors(pairs) -> dict:
    """"f64_relative_error": per pair max |f32 - f64| / max(1, |f64|) (a list for a list)."""
    def rel_error(key, a, b):
        assert a.dtype == torch.float32 and b.dtype == torch.float64, key
        return f9(((a.double() - b).abs() / b.abs().clamp(min=1)).max())

    return {
        key: [rel_error(key, a, b) for a, b in pair] if isinstance(pair, list)
        else rel_error(key, *pair)
        for key, pair in pairs.items()
    }


def trunk_lines(photo, pp, captured, dla, offset, mask) -> list:
    """The first lines the script prints per case (geometry, warp, trunk, first DCN, hm)."""
    off = offset.abs()
    if dla:
        rms = [f"{float(t.pow(2).mean().sqrt()):.2f}" for t in captured["levels"]]
        up_rms = [f"{float(t.pow(2).mean().sqrt()):.2f}" for t in captured["dla_up"]]
        shapes = (f"levels rms {rms}, dla_up rms {up_rms}, features "
                  f"{list(captured['features'].shape[1:])} rms "
                  f"{float(captured['features'].pow(2).mean().sqrt()):.2f}")
    else:
        shapes = (f"layer4 {list(captured['layer4'].shape[1:])}, "
                  f"deconv3 {list(captured['deconv3'].shape[1:])}")
    return [
        f"{photo}: {pp['h0']}x{pp['w0']}, c {pp['c'].tolist()}, s {pp['s']}, trans_input "
        f"{pp['trans_input'].tolist()}",
        f"  warped png {len(pp['png'])} bytes, {pp['formula_diff']} bytes differ from the "
        f"float32 formula; {shapes}",
        f"  dcn1 |offset| mean {off.mean():.3f} max {off.max():.3f}; mask {mask.min():.3f}.."
        f"{mask.max():.3f}; hm logits {captured['hm'].min():.3f}..{captured['hm'].max():.3f}",
    ]


def write_fixture(arch, checked, dcn_check, valid_ids, class_names):
    t0 = time.time()
    dla = arch == "dla_34"
    opt = build_opt(arch)
    detector, spec, not_generated, unused = load_generated(opt)
    model = detector.model
    model64 = double_copy(model)
    captured, captured64 = {}, {}
    register_keeps(model, captured, dla, ("hm", "wh", "reg"))
    register_keeps(model64, captured64, dla, ("hm", "wh", "reg"))

    # Record what run() passes between the official stages.
    rec = {}
    pre_process, process, post_process = (
        detector.pre_process, detector.process, detector.post_process)

    def pre_process_rec(image, scale, meta=None):
        rec["image"] = image
        images, meta = pre_process(image, scale, meta)
        rec["images"], rec["meta"] = images.clone(), meta
        return images, meta

    def process_rec(images, return_time=False):
        output, dets, forward_time = process(images, return_time=True)
        rec["heat"], rec["dets"] = output["hm"].clone(), dets.clone()
        return (output, dets, forward_time) if return_time else (output, dets)

    def post_process_rec(dets, meta, scale=1):
        out = post_process(dets, meta, scale)
        rec["post"] = {k: v.copy() for k, v in out.items()}
        return out

    detector.pre_process = pre_process_rec
    detector.process = process_rec
    detector.post_process = post_process_rec

    cases = []
    for n, photo in enumerate(PHOTOS):
        rng = np.random.default_rng(n + 1)
        path = os.path.join(ROOT, "assets", photo)
        rec.clear()
        captured.clear()
        DCN_CALLS.clear()
        _recording["on"] = True
        ret = detector.run(path)
        _recording["on"] = False
        results = ret["results"]
        pp = check_pre_processing(detector, opt, rec, path)
        h0, w0, c, s, meta = pp["h0"], pp["w0"], pp["c"], pp["s"], pp["meta"]
        trans_input, images = pp["trans_input"], pp["images"]

        offset, mask = first_dcn(captured, dla)

        # The decode, re-derived from the same heatmap (official _nms / _topk) for the
        # integer positions and the margins; checked against the detector's own dets.
        heat = rec["heat"]  # hm after hm.sigmoid_(), what ctdet_decode got
        assert torch.equal(heat, captured["hm"].sigmoid())
        dets = rec["dets"][0]  # [100, 6]: x1, y1, x2, y2, score, class (output pixels)
        with torch.no_grad():
            scores, inds, clses, ys, xs = _topk(_nms(heat), K=opt.K)
        reg = captured["reg"][0].reshape(2, -1)[:, inds[0]]
        wh = captured["wh"][0].reshape(2, -1)[:, inds[0]]
        assert torch.equal(dets[:, 4], scores[0]) and torch.equal(dets[:, 5], clses[0].float())
        cx, cy = xs[0] + reg[0], ys[0] + reg[1]
        assert torch.equal(dets[:, 0], cx - wh[0] / 2) and torch.equal(dets[:, 3], cy + wh[1] / 2)
        decode = [
            {
                "score": f9(dets[k, 4]),
                "class": int(dets[k, 5]),
                "index": int(inds[0, k]),
                "x": f9(cx[k]),
                "y": f9(cy[k]),
                "box": [f9(v) for v in dets[k, :4]],
            }
            for k in range(opt.K)
        ]
        assert all(d["index"] == int(ys[0, k]) * 128 + int(xs[0, k]) for k, d in enumerate(decode))
        m = margins(heat[0], dets[:, 4])

        # merge_outputs' result: per class j = 1..80 (in that order), rows as post_process
        # left them (decode order within a class).
        assert sorted(results) == list(range(1, 81))
        final = []
        for j in range(1, 81):
            assert results[j].dtype == np.float32 and results[j].shape[1] == 5
            assert np.array_equal(results[j], rec["post"][j])  # one scale, 100 dets: no cut
            for row in results[j]:
                final.append({
                    "class": j,
                    "label": j - 1,
                    "category_id": valid_ids[j - 1],
                    "box": [f9(v) for v in row[:4]],
                    "score": f9(row[4]),
                })
        assert len(final) == opt.K

        # The float64 run on the same input.
        with torch.no_grad():
            model64(images.double())
            hm64 = captured64["hm"]
            heat64 = hm64.sigmoid()
            dets64 = ctdet_decode(heat64, captured64["wh"], reg=captured64["reg"], K=opt.K)[0]
        pairs = trunk_pairs(captured, captured64, dla, offset, mask)
        pairs.update({
            "hm": (captured["hm"], hm64),
            "wh": (captured["wh"], captured64["wh"]),
            "reg": (captured["reg"], captured64["reg"]),
            "heat": (heat, heat64),
        })
        f64_error = relative_errors(pairs)
        _, inds64, clses64, _, _ = _topk(_nms(heat64), K=opt.K)
        f64_decode = {
            "same_indices_and_classes": torch.equal(inds64, inds) and torch.equal(clses64, clses),
            "max_abs_score_diff": f9((dets64[:, 4] - dets[:, 4].double()).abs().max()),
            "max_abs_box_diff": f9((dets64[:, :4] - dets[:, :4].double()).abs().max()),
        }

        classes = sorted(set(d["class"] for d in decode))
        case = case_header(photo, pp)
        case["input"] = summary(images[0], rng)
        if dla:
            for i in range(6):
                case[f"level{i}"] = summary(captured["levels"][i][0], rng)
            case["dla_up"] = [summary(t[0], rng) for t in captured["dla_up"]]
            case["features"] = summary(captured["features"][0], rng)
        else:
            case["layer4"] = summary(captured["layer4"][0], rng)
            case["deconv1"] = summary(captured["deconv1"][0], rng)
            case["deconv2"] = summary(captured["deconv2"][0], rng)
            case["deconv3"] = summary(captured["deconv3"][0], rng)
        case.update({
            "dcn1_offset": summary(offset, rng),
            "dcn1_mask": summary(mask, rng),
            "hm": summary(captured["hm"][0], rng),
            "wh": summary(captured["wh"][0], rng),
            "reg": summary(captured["reg"][0], rng),
            "decode": decode,
            "results": final,
            "margins": m,
            "f64_relative_error": f64_error,
            "f64_decode": f64_decode,
        })
        cases.append(case)

        sc = [d["score"] for d in decode]
        rows = [k // 128 for k in (d["index"] for d in decode)]
        lines = trunk_lines(photo, pp, captured, dla, offset, mask) + [
            f"  wh {captured['wh'].min():.2f}..{captured['wh'].max():.2f}, "
            f"reg {captured['reg'].min():.3f}..{captured['reg'].max():.3f}",
            f"  top-100 scores {sc[0]:.4f}..{sc[-1]:.4f}, {len(classes)} classes "
            f"{[(k, sum(d['class'] == k for d in decode)) for k in classes]}",
            "  first: " + ", ".join(
                f"{class_names[d['class']]}({d['score']:.3f})@{d['index']}" for d in decode[:8]),
            f"  peaks on rows {min(rows)}..{max(rows)}, {sum(22 <= r <= 105 for r in rows)} "
            "on rows 22..105",
            f"  margins: {json.dumps(m)}",
            f"  f64 relative error: {json.dumps(f64_error)}; decode {json.dumps(f64_decode)}",
        ]
        print("\n".join(lines), flush=True)

    doc = {
        "generator": "tests/reference/make_centernet_fixtures.py",
        "reference": {
            "centernet": CENTERNET_COMMIT,
            "torch": torch.__version__,
            "torchvision": torchvision.__version__,
            "numpy": np.__version__,
            "cv2": cv2.__version__,
        },
        "config": config_of(opt, detector),
        "coco_valid_ids": valid_ids,
        "class_names": class_names,
        "dcn_check": dcn_check,
        "weights": spec,
        "not_generated": [
            {"name": name, "shape": [], "dtype": "int64", "value": 0,
             "why": "BatchNorm2d.num_batches_tracked (training counter, unused at inference)"}
            for name in not_generated
        ],
    }
    if dla:
        doc["unused_in_forward"] = {"names": unused, "why": DLA_UNUSED_WHY}
    doc["cases"] = cases
    os.makedirs(OUT, exist_ok=True)
    path = os.path.join(OUT, "centernet_dla34.json" if dla else "centernet_resdcn18.json")
    with open(path, "w") as f:
        json.dump(doc, f, separators=(",", ":"))
        f.write("\n")
    print(f"checked {checked} files against {CENTERNET_COMMIT[:8]}; stubs: {STUBBED}")
    print(f"{len(spec)} generated tensors, {sum(int(np.prod(w['shape'])) for w in spec)} values, "
          f"{len(not_generated)} not generated" + (f", {len(unused)} unused" if dla else ""))
    print(f"wrote {path} ({os.path.getsize(path) / 1e3:.1f} KB) in {time.time() - t0:.1f} s")


def build_multi_pose_opt():
    opt = opts().init(MP_ARGS)
    assert opt.gpus == [-1] and opt.task == "multi_pose" and opt.arch == "dla_34"
    assert opt.heads == MP_HEADS and list(opt.heads) == list(MP_HEADS)  # and in this order
    assert opt.head_conv == 256 and opt.num_classes == 1 and opt.dataset == "coco_hp"
    assert opt.hm_hp and opt.reg_hp_offset and opt.reg_offset and not opt.mse_loss
    assert opt.fix_res and opt.input_h == opt.input_w == 512 and opt.down_ratio == 4
    assert opt.K == 100 and not opt.flip_test and not opt.dense_hp
    assert opt.test_scales == [1.0] and not opt.nms and opt.debug == 0
    assert opt.flip_idx == [[1, 2], [3, 4], [5, 6], [7, 8], [9, 10], [11, 12], [13, 14],
                            [15, 16]]
    return opt


def check_multi_pose_constants():
    """The decode's constants, read from the official source: thresh = 0.1, the -1 score and
    -10000 position sentinels, the 0.3 box-size factor; and that MultiPoseDetector.process
    applies the sigmoid to hm and hm_hp (mse_loss off)."""
    decode_src = inspect.getsource(multi_pose_decode)
    for text in ("thresh = 0.1", "hm_score = (1 - mask) * -1 + mask * hm_score",
                 "hm_ys = (1 - mask) * (-10000) + mask * hm_ys",
                 "(min_dist > (torch.max(b - t, r - l) * 0.3))",
                 "min_dist, min_ind = dist.min(dim=3)"):
        assert text in decode_src, text
    process_src = inspect.getsource(MultiPoseDetector.process)
    for text in ("output['hm'] = output['hm'].sigmoid_()",
                 "output['hm_hp'] = output['hm_hp'].sigmoid_()"):
        assert text in process_src, text
    assert MP_HP_THRESH == 0.1 and MP_HP_DIST_FACTOR == 0.3


def check_min_tie_rule() -> dict:
    """torch.min(dim)'s index on ties (documented: the first minimal value), checked on the
    shape and dtype of the decode's dist ([1, 17, 100, 100] float32): rows of equal values
    and rows with the minimum repeated at two places."""
    dist = torch.full((1, 17, 100, 100), 14142.0)
    dist[0, :, :, 37] = 5.0
    dist[0, :, :, 71] = 5.0
    dist[0, 3, 5, :] = 7.0  # a whole row tied
    _, ind = dist.min(dim=3)
    expect = torch.full_like(ind, 37)
    expect[0, 3, 5] = 0
    assert torch.equal(ind, expect)
    return {"rule": "first index of the minimum (torch docs; checked)", "checked": True}


def write_multi_pose_fixture(checked, dcn_check):
    t0 = time.time()
    opt = build_multi_pose_opt()
    check_multi_pose_constants()
    tie_rule = check_min_tie_rule()
    detector, spec, not_generated, unused = load_generated(opt)
    assert type(detector) is MultiPoseDetector and detector.flip_idx == opt.flip_idx
    model = detector.model
    model64 = double_copy(model)
    heads = tuple(MP_HEADS)
    captured, captured64 = {}, {}
    register_keeps(model, captured, True, heads)
    register_keeps(model64, captured64, True, heads)
    K, J = opt.K, 17

    rec = {}
    pre_process, process, post_process = (
        detector.pre_process, detector.process, detector.post_process)

    def pre_process_rec(image, scale, meta=None):
        rec["image"] = image
        images, meta = pre_process(image, scale, meta)
        rec["images"], rec["meta"] = images.clone(), meta
        return images, meta

    def process_rec(images, return_time=False):
        output, dets, forward_time = process(images, return_time=True)
        rec["heat"], rec["hm_hp"] = output["hm"].clone(), output["hm_hp"].clone()
        rec["dets"] = dets.clone()
        return (output, dets, forward_time) if return_time else (output, dets)

    def post_process_rec(dets, meta, scale=1):
        out = post_process(dets, meta, scale)
        rec["post"] = {k: v.copy() for k, v in out.items()}
        return out

    detector.pre_process = pre_process_rec
    detector.process = process_rec
    detector.post_process = post_process_rec

    cases = []
    for n, photo in enumerate(PHOTOS):
        rng = np.random.default_rng(n + 1)
        path = os.path.join(ROOT, "assets", photo)
        rec.clear()
        captured.clear()
        DCN_CALLS.clear()
        _recording["on"] = True
        ret = detector.run(path)
        _recording["on"] = False
        results = ret["results"]
        pp = check_pre_processing(detector, opt, rec, path)
        images = pp["images"]
        offset, mask = first_dcn(captured, True)

        # The decode, re-derived step by step (multi_pose_steps) from what process() gave
        # multi_pose_decode, and checked against the detector's own dets.
        heat, hp = rec["heat"], rec["hm_hp"]  # after sigmoid_()
        assert torch.equal(heat, captured["hm"].sigmoid())
        assert torch.equal(hp, captured["hm_hp"].sigmoid())
        dets = rec["dets"][0]  # [100, 40]: box 4, score, 17 x (x, y), class (output pixels)
        assert list(dets.shape) == [K, 40] and dets.dtype == torch.float32
        with torch.no_grad():
            st = multi_pose_steps(heat, captured["wh"], captured["hps"].clone(),
                                  captured["reg"], hp, captured["hp_offset"], K=K)
        assert torch.equal(st["dets"], dets)
        assert torch.equal(st["inds"], st["ys"].long() * 128 + st["xs"].long())
        assert bool((dets[:, 39] == 0).all())
        assert torch.equal(st["hm_inds"] // 128, (st["hm_inds"] / 128).int().long())
        sentinel_only = ~st["cand"].any(dim=1)  # joints without a candidate above 0.1
        assert bool((st["min_ind"][sentinel_only] == 0).all())  # all 100 distances tie
        snapped = ~st["keep_regressed"]  # [J, K]
        decode = [
            {
                "score": f9(dets[k, 4]),
                "class": int(dets[k, 39]),
                "index": int(st["inds"][k]),
                "x": f9(st["cx"][k]),
                "y": f9(st["cy"][k]),
                "box": [f9(v) for v in dets[k, :4]],
                "kps": [[f9(dets[k, 5 + 2 * j]), f9(dets[k, 6 + 2 * j])] for j in range(J)],
                "snapped": [int(snapped[j, k]) for j in range(J)],
            }
            for k in range(K)
        ]
        m = margins(heat[0], dets[:, 4])
        m.update(pose_margins(st, hp[0], K))

        # post_process / merge_outputs: results = {1: 100 lists of 39 floats} in decode order;
        # every point through trans_output_inv in float64, rounded to float32.
        assert sorted(results) == [1] and len(results[1]) == K
        got = np.array(results[1], dtype=np.float64)
        post = rec["post"][1]
        assert post.dtype == np.float32 and post.shape == (K, 39)
        assert np.array_equal(got, post.astype(np.float64))  # .tolist() of float32 values
        d = dets.numpy()
        pts = np.concatenate([d[:, 0:4].reshape(-1, 2), d[:, 5:39].reshape(-1, 2)])
        inv = pp["trans_output_inv"]
        mapped = np.stack([inv @ np.array([x, y, 1.0], dtype=np.float32) for x, y in pts])
        mapped = mapped.astype(np.float32)
        assert np.array_equal(post[:, 0:4].reshape(-1, 2), mapped[:2 * K])
        assert np.array_equal(post[:, 5:39].reshape(-1, 2), mapped[2 * K:])
        assert np.array_equal(post[:, 4], d[:, 4])
        final = [
            {
                "box": [f9(v) for v in row[:4]],
                "score": f9(row[4]),
                "kps": [[f9(row[5 + 2 * j]), f9(row[6 + 2 * j])] for j in range(J)],
            }
            for row in post
        ]

        # The float64 run on the same input.
        with torch.no_grad():
            model64(images.double())
            heat64 = captured64["hm"].sigmoid()
            hp64 = captured64["hm_hp"].sigmoid()
            dets64 = multi_pose_decode(
                heat64, captured64["wh"], captured64["hps"], reg=captured64["reg"],
                hm_hp=hp64, hp_offset=captured64["hp_offset"], K=K)[0]
            st64 = multi_pose_steps(heat64, captured64["wh"], captured64["hps"].clone(),
                                    captured64["reg"], hp64, captured64["hp_offset"], K=K)
        assert torch.equal(st64["dets"], dets64)
        pairs = trunk_pairs(captured, captured64, True, offset, mask)
        pairs.update({key: (captured[key], captured64[key]) for key in heads})
        pairs.update({"heat": (heat, heat64), "hm_hp_sigmoid": (hp, hp64)})
        f64_error = relative_errors(pairs)
        real = st["hm_score"] > MP_HP_THRESH
        chosen = st["hm_inds"].gather(1, st["min_ind"])  # the pixel each joint looked at
        chosen64 = st64["hm_inds"].gather(1, st64["min_ind"])
        cand_pixels = [sorted(st["hm_inds"][j][st["cand"][j]].tolist()) for j in range(J)]
        cand_pixels64 = [sorted(st64["hm_inds"][j][st64["cand"][j]].tolist()) for j in range(J)]
        f64_decode = {
            "same_indices_and_classes": (torch.equal(st64["inds"], st["inds"])
                                         and torch.equal(st64["clses"], st["clses"])),
            "same_hm_hp_candidates": cand_pixels == cand_pixels64,
            "same_snapping": (torch.equal(st64["keep_regressed"], st["keep_regressed"])
                              and torch.equal(chosen64[real], chosen[real])),
            "max_abs_score_diff": f9((dets64[:, 4] - dets[:, 4].double()).abs().max()),
            "max_abs_box_diff": f9((dets64[:, :4] - dets[:, :4].double()).abs().max()),
            "max_abs_kps_diff": f9((dets64[:, 5:39] - dets[:, 5:39].double()).abs().max()),
        }

        case = case_header(photo, pp)
        case["input"] = summary(images[0], rng)
        case["features"] = summary(captured["features"][0], rng)
        for key in heads:
            case[key] = summary(captured[key][0], rng)
        case.update({
            "decode": decode,
            "results": final,
            "margins": m,
            "f64_relative_error": f64_error,
            "f64_decode": f64_decode,
        })
        cases.append(case)

        sc = [x["score"] for x in decode]
        rows = [x["index"] // 128 for x in decode]
        rng_of = lambda key: f"{captured[key].min():.3f}..{captured[key].max():.3f}"  # noqa: E731
        lines = trunk_lines(photo, pp, captured, True, offset, mask) + [
            f"  wh {rng_of('wh')}, reg {rng_of('reg')}, hps {rng_of('hps')}, hm_hp logits "
            f"{rng_of('hm_hp')}, hp_offset {rng_of('hp_offset')}",
            f"  top-100 scores {sc[0]:.4f}..{sc[-1]:.4f}; peaks on rows {min(rows)}..{max(rows)}, "
            f"{sum(22 <= r <= 105 for r in rows)} on rows 22..105",
            f"  joints: {int(snapped.sum())} snapped to a hm_hp peak, "
            f"{int((~snapped).sum())} keep the regressed hps position",
            f"  margins: {json.dumps(m)}",
            f"  f64 relative error: {json.dumps(f64_error)}; decode {json.dumps(f64_decode)}",
        ]
        print("\n".join(lines), flush=True)

    config = config_of(opt, detector)
    config["args"] = MP_ARGS
    config.update({
        "dataset": opt.dataset,
        "num_joints": J,
        "flip_idx": opt.flip_idx,
        "hm_hp": opt.hm_hp,
        "reg_hp_offset": opt.reg_hp_offset,
        "mse_loss": opt.mse_loss,
        "dense_hp": opt.dense_hp,
        "sigmoid": ["hm", "hm_hp"],
        "decode": {
            "hm_hp_nms_kernel": 3,
            "hm_hp_topk": K,
            "hm_hp_thresh": MP_HP_THRESH,
            "dist_factor": MP_HP_DIST_FACTOR,
            "sentinel_position": -10000,
            "sentinel_score": -1,
            "argmin_tie_rule": tie_rule,
        },
        "results_class": 1,
        "category_id": 1,
    })
    doc = {
        "generator": "tests/reference/make_centernet_fixtures.py --task multi_pose --arch dla_34",
        "reference": {
            "centernet": CENTERNET_COMMIT,
            "torch": torch.__version__,
            "torchvision": torchvision.__version__,
            "numpy": np.__version__,
            "cv2": cv2.__version__,
        },
        "config": config,
        "class_names": ["person"],
        "dcn_check": dcn_check,
        "weights": spec,
        "not_generated": [
            {"name": name, "shape": [], "dtype": "int64", "value": 0,
             "why": "BatchNorm2d.num_batches_tracked (training counter, unused at inference)"}
            for name in not_generated
        ],
        "unused_in_forward": {"names": unused, "why": DLA_UNUSED_WHY},
        "cases": cases,
    }
    os.makedirs(OUT, exist_ok=True)
    path = os.path.join(OUT, "centernet_multi_pose_dla34.json")
    with open(path, "w") as f:
        json.dump(doc, f, separators=(",", ":"))
        f.write("\n")
    new_heads = [w["name"] for w in spec if w["name"].startswith(("hps.", "hm_hp.", "hp_offset."))]
    print(f"checked {checked} files against {CENTERNET_COMMIT[:8]}; stubs: {STUBBED}")
    print(f"{len(spec)} generated tensors, {sum(int(np.prod(w['shape'])) for w in spec)} values, "
          f"{len(not_generated)} not generated, {len(unused)} unused; new heads: {new_heads}")
    print(f"wrote {path} ({os.path.getsize(path) / 1e3:.1f} KB) in {time.time() - t0:.1f} s")


def fnv1a64_bytes(data: bytes) -> int:
    h = 0xCBF29CE484222325
    for byte in data:
        h ^= byte
        h = (h * 0x100000001B3) & ((1 << 64) - 1)
    return h


if __name__ == "__main__":
    main()
