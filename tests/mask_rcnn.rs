//! `pipelines/mask_rcnn_r50_fpn.toml` through the real `engine` binary.
//!
//! No trained checkpoint can be fetched here, so the pipeline runs with the generated
//! ResNet-18-FPN Mask R-CNN weights of `plugins/rcnn/tests/fixtures/maskrcnn_r18_fpn.json`
//! (`kernels::weights::generated_tensor`, bit-identical to what
//! `tests/reference/make_maskrcnn_fixtures.py` loaded into torchvision), switched to depth 18
//! with `--set`, on the fixture's photo and settings; the COCO results JSON it writes must
//! match torchvision's final detections and masks. `pipelines/keypoint_rcnn_r50_fpn.toml`
//! likewise with the Keypoint R-CNN fixture (`keypointrcnn_r18_fpn.json`): its COCO results
//! must carry torchvision's final keypoints. `pipelines/retinaface_mnet.toml` with the
//! RetinaFace fixture (`plugins/retinaface/tests/fixtures/retinaface.json`, written as a
//! DataParallel checkpoint like the released file): its JSON lines must carry the official
//! faces and landmarks. `pipelines/yolact_r50.toml` with the YOLACT fixture
//! (`plugins/yolact/tests/fixtures/yolact_r50.json`): its COCO results must carry the official
//! detections and masks. `pipelines/multitask_r50_fpn.toml` with the DensePose fixture's
//! trunk and head (`densepose_r18_fpn.json`, Detectron2's DensePose on torchvision's trunk) and
//! the other fixtures' mask and keypoint heads: every detection carries a mask, keypoints and
//! DensePose's result equal to Detectron2's, and the trace shows the three heads overlapping.
//! `pipelines/detr_r50.toml` with the DETR fixture (`plugins/detr/tests/fixtures/detr_r50.json`):
//! its COCO results must be the official `PostProcess` results of the 100 queries.
//! `pipelines/maskformer_r50.toml` with the MaskFormer fixture: `engine eval pq` of its
//! panoptic output against the official segmentation gives RQ 1.
//! `pipelines/cornernet_hg104.toml` with the CornerNet fixture
//! (`plugins/centernet/tests/fixtures/cornernet_small.json`, its small `kp`): its COCO results
//! are the official `kp_detection` results.

#[path = "support/scratch.rs"]
mod scratch;
use scratch::Scratch;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use kernels::Tensor;
use serde_json::Value as Json;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn fixture() -> Json {
    fixture_named("maskrcnn_r18_fpn.json")
}

fn fixture_named(name: &str) -> Json {
    let path = repo().join("plugins/rcnn/tests/fixtures").join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).expect("fixture json")
}

fn scratch(name: &str) -> Scratch {
    Scratch::new(&format!("engine-maskrcnn-{name}"))
}

/// The fixture's generated state dict as a .safetensors file.
fn write_weights(doc: &Json, path: &Path) {
    write_named_weights(&doc["weights"], "", path)
}

/// A generated state dict (`spec`: name, shape, a, b) as a .safetensors file, each name
/// under `outer`.
fn write_named_weights(spec: &Json, outer: &str, path: &Path) {
    let tensors: Vec<(String, Tensor)> = spec
        .as_array()
        .expect("weights")
        .iter()
        .map(|w| {
            let name = w["name"].as_str().expect("name");
            let shape: Vec<usize> = w["shape"]
                .as_array()
                .expect("shape")
                .iter()
                .map(|v| v.as_u64().expect("dim") as usize)
                .collect();
            let (a, b) = (w["a"].as_f64().expect("a"), w["b"].as_f64().expect("b"));
            let t = kernels::weights::generated_tensor(name, &shape, a as f32, b as f32)
                .expect("generated tensor");
            (format!("{outer}{name}"), t)
        })
        .collect();
    kernels::weights::save_safetensors(path, &tensors).expect("write weights");
}

/// `engine run pipelines/mask_rcnn_r50_fpn.toml` from `dir` on assets/astronaut.png with every
/// `weights` set to `weights` (one `--set vars.weights`), plus `extra` settings.
fn run_pipeline(dir: &Path, weights: &Path, extra: &[String]) -> Output {
    run_named_pipeline("mask_rcnn_r50_fpn.toml", dir, weights, extra)
}

/// [`run_pipeline`] for another file of `pipelines/`.
fn run_named_pipeline(name: &str, dir: &Path, weights: &Path, extra: &[String]) -> Output {
    run_named_pipeline_with(name, dir, weights, extra, &[])
}

/// [`run_named_pipeline`] with more `engine run` options (`flags`).
fn run_named_pipeline_with(
    name: &str,
    dir: &Path,
    weights: &Path,
    extra: &[String],
    flags: &[&str],
) -> Output {
    let pipeline = repo().join("pipelines").join(name);
    let mut args: Vec<String> = vec!["run".into()];
    args.extend(flags.iter().map(|f| f.to_string()));
    args.push(pipeline.display().to_string());
    args.push("--set".into());
    args.push(format!(
        "nodes.images.path={}",
        repo().join("assets/astronaut.png").display()
    ));
    args.push("--set".into());
    args.push(format!("vars.weights={}", weights.display()));
    for e in extra {
        args.push("--set".into());
        args.push(e.clone());
    }
    Command::new(env!("CARGO_BIN_EXE_engine"))
        .args(&args)
        .current_dir(dir)
        .output()
        .expect("run engine")
}

/// The numbers of a JSON array, nested arrays flattened in order.
fn floats(j: &Json) -> Vec<f64> {
    match j {
        Json::Array(items) => items.iter().flat_map(floats).collect(),
        v => vec![v.as_f64().expect("number")],
    }
}

fn iou(a: &[f64], b: &[f64]) -> f64 {
    let area = |r: &[f64]| (r[2] - r[0]) * (r[3] - r[1]);
    let w = (a[2].min(b[2]) - a[0].max(b[0])).max(0.0);
    let h = (a[3].min(b[3]) - a[1].max(b[1])).max(0.0);
    let inter = w * h;
    inter / (area(a) + area(b) - inter)
}

/// Run lengths to a column-major 0/1 vector (both sides are column-major COCO RLE).
fn expand(counts: &[u64]) -> Vec<u8> {
    let mut v = Vec::new();
    for (k, &c) in counts.iter().enumerate() {
        v.extend(std::iter::repeat_n((k % 2) as u8, c as usize));
    }
    v
}

/// How many pixels of our COCO segmentation (`seg`, compressed RLE) differ from the
/// fixture's mask (`want`, uncompressed RLE counts), out of how many; the masks must be of
/// one size.
fn mask_pixels_differing(seg: &Json, want: &Json) -> (usize, usize) {
    let counts: Vec<u64> = plugin_io::rle::decode(seg["counts"].as_str().expect("counts"))
        .expect("RLE")
        .into_iter()
        .map(u64::from)
        .collect();
    let want: Vec<u64> = want
        .as_array()
        .expect("rle")
        .iter()
        .map(|v| v.as_u64().expect("count"))
        .collect();
    let (a, b) = (expand(&counts), expand(&want));
    assert_eq!(a.len(), b.len());
    (a.iter().zip(&b).filter(|(x, y)| x != y).count(), a.len())
}

/// The fixture's astronaut case, and the `--set`s that switch the pipeline to its ResNet-18
/// trunk and settings.
fn astronaut_case(doc: &Json) -> (&Json, Vec<String>) {
    let case = doc["cases"]
        .as_array()
        .expect("cases")
        .iter()
        .find(|c| c["photo"] == "astronaut.png")
        .expect("astronaut case");
    let p = &case["params"];
    let sets = vec![
        format!("nodes.preprocess.min_size={}", p["min_size"]),
        format!("nodes.preprocess.max_size={}", p["max_size"]),
        "nodes.backbone.depth=18".into(),
        format!("nodes.backbone.bn_eps={}", p["bn_eps"]),
        "nodes.fpn.depth=18".into(),
        format!("nodes.box_head.score_thresh={}", doc["box_score_thresh"]),
    ];
    (case, sets)
}

#[test]
fn mask_rcnn_pipeline_matches_torchvision_through_the_engine() {
    let doc = fixture();
    let (case, sets) = astronaut_case(&doc);
    let dir = scratch("match");
    let weights = dir.join("maskrcnn_r18_fpn.safetensors");
    write_weights(&doc, &weights);
    let out = run_pipeline(&dir, &weights, &sets);
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.status.code(), Some(0), "{report}");
    // The per-node report names every stage.
    for node in ["backbone", "rpn", "box_head", "mask_head", "paste"] {
        assert!(report.contains(node), "{report}");
    }
    let text = std::fs::read_to_string(dir.join("out/mask_rcnn/detections.json")).expect("json");
    let ours: Vec<Json> = serde_json::from_str(&text).expect("COCO results array");
    assert!(dir.join("out/mask_rcnn/overlays/000000.png").is_file());

    let fin = &case["final"];
    let boxes = floats(&fin["boxes"]);
    let scores = floats(&case["detections"]["scores"]);
    let labels = floats(&case["detections"]["labels"]);
    let (h, w) = (
        case["original_size"][0].as_u64().expect("h"),
        case["original_size"][1].as_u64().expect("w"),
    );
    assert_eq!(ours.len(), scores.len(), "number of detections");
    let mut used = vec![false; ours.len()];
    let (mut differ, mut total) = (0usize, 0usize);
    for j in 0..scores.len() {
        let theirs = &boxes[j * 4..j * 4 + 4];
        let found = (0..ours.len()).find(|&i| {
            let o = &ours[i];
            let b = floats(&o["bbox"]);
            let xyxy = [b[0], b[1], b[0] + b[2], b[1] + b[3]];
            !used[i]
                && o["category_id"].as_f64() == Some(labels[j])
                && (o["score"].as_f64().expect("score") - scores[j]).abs() <= 1e-4
                && iou(&xyxy, theirs) >= 0.999
        });
        let i = found.unwrap_or_else(|| panic!("torchvision detection {j} ({theirs:?}) not found"));
        used[i] = true;
        let seg = &ours[i]["segmentation"];
        assert_eq!(seg["size"], serde_json::json!([h, w]));
        let (d, t) = mask_pixels_differing(seg, &fin["masks_rle"][j]);
        differ += d;
        total += t;
    }
    let agree = 1.0 - differ as f64 / total as f64;
    assert!(agree >= 0.999, "masks agree on {agree}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn keypoint_rcnn_pipeline_matches_torchvision_through_the_engine() {
    let doc = fixture_named("keypointrcnn_r18_fpn.json");
    let case = &doc["cases"][0];
    let photo = case["photo"].as_str().expect("photo");
    let dir = scratch("keypoints");
    let weights = dir.join("keypointrcnn_r18_fpn.safetensors");
    write_weights(&doc, &weights);
    let p = &case["params"];
    let layers: Vec<String> = doc["keypoint_layers"]
        .as_array()
        .expect("layers")
        .iter()
        .map(|v| v.to_string())
        .collect();
    let out = run_named_pipeline(
        "keypoint_rcnn_r50_fpn.toml",
        &dir,
        &weights,
        &[
            format!(
                "nodes.images.path={}",
                repo().join("assets").join(photo).display()
            ),
            format!("nodes.preprocess.min_size={}", p["min_size"]),
            format!("nodes.preprocess.max_size={}", p["max_size"]),
            "nodes.backbone.depth=18".into(),
            format!("nodes.backbone.bn_eps={}", p["bn_eps"]),
            "nodes.fpn.depth=18".into(),
            format!("nodes.keypoint_head.layers=[{}]", layers.join(", ")),
        ],
    );
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.status.code(), Some(0), "{report}");
    let text =
        std::fs::read_to_string(dir.join("out/keypoint_rcnn/detections.json")).expect("json");
    let ours: Vec<Json> = serde_json::from_str(&text).expect("COCO results array");
    assert!(dir.join("out/keypoint_rcnn/overlays/000000.png").is_file());
    let fin = &case["final"];
    let boxes = floats(&fin["boxes"]);
    let keypoints = floats(&fin["keypoints"]);
    let scores = floats(&case["detections"]["scores"]);
    assert_eq!(ours.len(), scores.len(), "number of detections");
    let mut used = vec![false; ours.len()];
    for j in 0..scores.len() {
        let theirs = &boxes[j * 4..j * 4 + 4];
        let i = (0..ours.len())
            .find(|&i| {
                let b = floats(&ours[i]["bbox"]);
                let xyxy = [b[0], b[1], b[0] + b[2], b[1] + b[3]];
                !used[i]
                    && ours[i]["category_id"].as_f64() == Some(1.0)
                    && (ours[i]["score"].as_f64().expect("score") - scores[j]).abs() <= 1e-4
                    && iou(&xyxy, theirs) >= 0.999
            })
            .unwrap_or_else(|| panic!("torchvision detection {j} ({theirs:?}) not found"));
        used[i] = true;
        let kp = floats(&ours[i]["keypoints"]);
        let want = &keypoints[j * 51..(j + 1) * 51];
        assert_eq!(kp.len(), 51, "17 keypoints (x, y, v)");
        for (d, (a, b)) in kp.iter().zip(want).enumerate() {
            assert!(
                (a - b).abs() <= 0.01,
                "detection {j} value {d}: ours {a}, torchvision {b}"
            );
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn retinaface_pipeline_matches_the_official_code_through_the_engine() {
    let path = repo().join("plugins/retinaface/tests/fixtures/retinaface.json");
    let doc: Json =
        serde_json::from_str(&std::fs::read_to_string(&path).expect("fixture")).expect("json");
    let case = &doc["cases"][0];
    assert_eq!(case["config"], "mnet");
    let photo = case["photo"].as_str().expect("photo");
    let dir = scratch("retinaface");
    let weights = dir.join("mobilenet0.25_Final.safetensors");
    write_named_weights(&doc["weights_mnet"], "module.", &weights);
    let out = run_named_pipeline(
        "retinaface_mnet.toml",
        &dir,
        &weights,
        &[format!(
            "nodes.images.path={}",
            repo().join("assets").join(photo).display()
        )],
    );
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.status.code(), Some(0), "{report}");
    assert!(dir
        .join("out/retinaface_mnet/overlays/000000.png")
        .is_file());
    let text = std::fs::read_to_string(dir.join("out/retinaface_mnet/faces.jsonl")).expect("jsonl");
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 1, "one frame");
    let frame: Json = serde_json::from_str(lines[0]).expect("a JSON object");
    let faces = frame["instances"].as_array().expect("instances");
    let (boxes, scores, landmarks) = (
        floats(&case["boxes"]),
        floats(&case["scores"]),
        floats(&case["landmarks"]),
    );
    assert_eq!(faces.len(), scores.len(), "number of faces");
    // The mnet cases have no near-ties: the order is the official one.
    for (j, face) in faces.iter().enumerate() {
        let b = floats(&face["bbox"]);
        let xyxy = [b[0], b[1], b[0] + b[2], b[1] + b[3]];
        assert!(
            iou(&xyxy, &boxes[4 * j..4 * j + 4]) >= 0.999,
            "face {j}: {b:?}"
        );
        assert!(
            (face["score"].as_f64().expect("score") - scores[j]).abs() <= 1e-4,
            "face {j}"
        );
        let lm = floats(&face["landmarks"]);
        assert_eq!(lm.len(), 10, "five (x, y) landmarks");
        for (a, want) in lm.iter().zip(&landmarks[10 * j..10 * j + 10]) {
            assert!((a - want).abs() <= 0.01, "face {j}: landmarks {lm:?}");
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// Runs `pipelines/{pipeline}.toml` from a fresh scratch directory with the generated weights
/// of a family's fixture (`plugins/{family}/tests/fixtures/{pipeline}.json`) on the photo of
/// its first case (or `photo` when given), plus `extra` settings; checks that it succeeded
/// and wrote its overlay. Returns the fixture and the directory (outputs under
/// `out/{pipeline}/`).
fn run_fixture_pipeline(
    family: &str,
    pipeline: &str,
    photo: Option<&Path>,
    extra: &[String],
) -> (Json, Scratch) {
    let path = repo().join(format!("plugins/{family}/tests/fixtures/{pipeline}.json"));
    let doc: Json =
        serde_json::from_str(&std::fs::read_to_string(&path).expect("fixture")).expect("json");
    let dir = scratch(pipeline);
    let weights = dir.join(format!("{pipeline}.safetensors"));
    write_named_weights(&doc["weights"], "", &weights);
    let photo = photo.map(Path::to_path_buf).unwrap_or_else(|| {
        repo()
            .join("assets")
            .join(doc["cases"][0]["photo"].as_str().expect("photo"))
    });
    let mut settings = vec![format!("nodes.images.path={}", photo.display())];
    settings.extend_from_slice(extra);
    let out = run_named_pipeline(&format!("{pipeline}.toml"), &dir, &weights, &settings);
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.status.code(), Some(0), "{report}");
    assert!(dir
        .join(format!("out/{pipeline}/overlays/000000.png"))
        .is_file());
    (doc, dir)
}

/// COCO results `ours` against the official YOLACT (or YolactEdge) detections `det` and RLE
/// `masks`: the same number, each matched by category, score within 1e-4 and integer box
/// within a pixel, and masks agreeing on >= 99.9% of pixels.
fn check_yolact_results(ours: &[Json], det: &Json, masks: &Json, category: impl Fn(usize) -> i64) {
    let (classes, scores, boxes) = (
        floats(&det["classes"]),
        floats(&det["scores"]),
        floats(&det["boxes"]),
    );
    assert_eq!(ours.len(), scores.len(), "number of detections");
    let rle = |r: &Json| {
        expand(
            &plugin_io::rle::decode(r["counts"].as_str().expect("counts"))
                .expect("rle")
                .iter()
                .map(|&c| u64::from(c))
                .collect::<Vec<_>>(),
        )
    };
    let mut used = vec![false; ours.len()];
    let (mut agree, mut total) = (0usize, 0usize);
    for j in 0..scores.len() {
        let want = &boxes[4 * j..4 * j + 4];
        let class = category(classes[j] as usize) as f64;
        let i = (0..ours.len())
            .find(|&i| {
                let b = floats(&ours[i]["bbox"]);
                let xyxy = [b[0], b[1], b[0] + b[2], b[1] + b[3]];
                !used[i]
                    && ours[i]["category_id"].as_f64() == Some(class)
                    && (ours[i]["score"].as_f64().expect("score") - scores[j]).abs() <= 1e-4
                    && xyxy.iter().zip(want).all(|(a, b)| (a - b).abs() <= 1.0)
            })
            .unwrap_or_else(|| panic!("official detection {j} ({want:?}) not found"));
        used[i] = true;
        let seg = &ours[i]["segmentation"];
        assert_eq!(seg["size"], masks[j]["size"]);
        let (a, b) = (rle(seg), rle(&masks[j]));
        total += b.len();
        agree += a.iter().zip(&b).filter(|(x, y)| x == y).count();
    }
    assert!(
        agree as f64 >= 0.999 * total as f64,
        "masks agree on {agree} of {total} pixels"
    );
}

/// `pipelines/yolact_edge_r50.toml` through the engine on the YolactEdge fixture's three
/// frames (a folder of PNGs, one stream): a keyframe and two warped frames, with the
/// traditional NMS the fixture ran, each frame's COCO results equal to the official ones.
#[test]
fn yolact_edge_pipeline_matches_the_official_code_over_frames() {
    let path = repo().join("plugins/yolact/tests/fixtures/yolact_edge_r50.json");
    let doc: Json =
        serde_json::from_str(&std::fs::read_to_string(&path).expect("fixture")).expect("json");
    let dir = scratch("yolact-edge");
    let weights = dir.join("yolact_edge.safetensors");
    write_named_weights(&doc["weights"], "", &weights);
    let photo =
        plugin_io::image_source::read_image(&repo().join("assets/astronaut.png")).expect("photo");
    let frames = dir.join("frames");
    std::fs::create_dir_all(&frames).expect("frames dir");
    for frame in doc["frames"].as_array().expect("frames") {
        let (o, s) = (
            floats(&frame["crop_origin"]),
            floats(&frame["original_size"]),
        );
        let (y0, x0, h, w) = (o[0] as usize, o[1] as usize, s[0] as usize, s[1] as usize);
        let (pw, px) = (photo.shape()[1], photo.as_slice::<u8>().expect("u8"));
        let crop: Vec<u8> = (y0..y0 + h)
            .flat_map(|y| px[(y * pw + x0) * 3..(y * pw + x0 + w) * 3].iter().copied())
            .collect();
        let name = frames.join(format!("{}.png", frame["frame"]));
        plugin_io::image_sink::write_rgb_png(&name, w, h, &crop).expect("frame png");
    }
    // A fourth frame of another size, between keyframes: a forced keyframe, said in the log.
    let (pw, px) = (photo.shape()[1], photo.as_slice::<u8>().expect("u8"));
    let small: Vec<u8> = (0..100)
        .flat_map(|y| px[y * pw * 3..(y * pw + 120) * 3].iter().copied())
        .collect();
    plugin_io::image_sink::write_rgb_png(&frames.join("3.png"), 120, 100, &small)
        .expect("frame png");
    let out = run_named_pipeline(
        "yolact_edge_r50.toml",
        &dir,
        &weights,
        &[
            format!("nodes.images.path={}/*.png", frames.display()),
            "nodes.yolact_edge.nms=\"traditional\"".into(),
        ],
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(
        log.contains("frame 3: the frame size changed from 240x180 to 120x100; forcing a keyframe"),
        "{log}"
    );
    let text =
        std::fs::read_to_string(dir.join("out/yolact_edge_r50/detections.json")).expect("json");
    let ours: Vec<Json> = serde_json::from_str(&text).expect("COCO results array");
    for frame in doc["frames"].as_array().expect("frames") {
        let id = frame["frame"].as_u64();
        let mine: Vec<Json> = ours
            .iter()
            .filter(|r| r["image_id"].as_u64() == id)
            .cloned()
            .collect();
        check_yolact_results(&mine, &frame["detections"], &frame["masks"], |c| {
            c as i64 + 1
        });
    }
}

#[test]
fn yolact_pipeline_matches_the_official_code_through_the_engine() {
    let (doc, dir) = run_fixture_pipeline("yolact", "yolact_r50", None, &[]);
    let case = &doc["cases"][0];
    let text = std::fs::read_to_string(dir.join("out/yolact_r50/detections.json")).expect("json");
    let ours: Vec<Json> = serde_json::from_str(&text).expect("COCO results array");
    check_yolact_results(&ours, &case["detections"], &case["masks"], |c| {
        plugin_yolact::head::COCO_CATEGORY_IDS[c]
    });
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn detr_pipeline_matches_the_official_code_through_the_engine() {
    let (doc, dir) = run_fixture_pipeline("detr", "detr_r50", None, &[]);
    let case = &doc["cases"][0];
    let text = std::fs::read_to_string(dir.join("out/detr_r50/detections.json")).expect("json");
    let ours: Vec<Json> = serde_json::from_str(&text).expect("COCO results array");
    let r = &case["results"];
    let (labels, scores, boxes) = (
        floats(&r["labels"]),
        floats(&r["scores"]),
        floats(&r["boxes"]),
    );
    // PostProcess keeps every query, in query order.
    assert_eq!(ours.len(), scores.len(), "one result per query");
    for (j, d) in ours.iter().enumerate() {
        assert_eq!(
            d["category_id"].as_f64(),
            Some(labels[j]),
            "query {j}: label"
        );
        let score = d["score"].as_f64().expect("score");
        assert!(
            (score - scores[j]).abs() <= 1e-4,
            "query {j}: score {score} vs {}",
            scores[j]
        );
        let b = floats(&d["bbox"]);
        let xyxy = [b[0], b[1], b[0] + b[2], b[1] + b[3]];
        for (a, want) in xyxy.iter().zip(&boxes[4 * j..4 * j + 4]) {
            assert!(
                (a - want).abs() <= 1e-2,
                "query {j}: box {xyxy:?} vs {:?}",
                &boxes[4 * j..4 * j + 4]
            );
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// `pipelines/centernet_resdcn18.toml` on a photo with the CenterNet fixture's weights: the
/// COCO results are the official `ctdet_post_process` detections (same category ids, scores
/// within 1e-4, boxes within 0.01 px).
#[test]
fn centernet_pipeline_matches_the_official_code_through_the_engine() {
    let (doc, dir) = run_fixture_pipeline("centernet", "centernet_resdcn18", None, &[]);
    let case = &doc["cases"][0];
    let text =
        std::fs::read_to_string(dir.join("out/centernet_resdcn18/detections.json")).expect("json");
    let ours: Vec<Json> = serde_json::from_str(&text).expect("COCO results array");
    let results = case["results"].as_array().expect("results");
    assert_eq!(ours.len(), results.len(), "number of detections");
    let mut used = vec![false; ours.len()];
    for (j, r) in results.iter().enumerate() {
        let want = floats(&r["box"]);
        let score = r["score"].as_f64().expect("score");
        let i = (0..ours.len())
            .find(|&i| {
                let b = floats(&ours[i]["bbox"]);
                let xyxy = [b[0], b[1], b[0] + b[2], b[1] + b[3]];
                !used[i]
                    && ours[i]["category_id"] == r["category_id"]
                    && (ours[i]["score"].as_f64().expect("score") - score).abs() <= 1e-4
                    && xyxy.iter().zip(&want).all(|(a, b)| (a - b).abs() <= 1e-2)
            })
            .unwrap_or_else(|| panic!("official detection {j} ({r}) not found in {text}"));
        used[i] = true;
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// `pipelines/centernet_multi_pose_dla34.toml` with the multi-pose fixture's weights: the
/// COCO results hold the official people, each with its 17 keypoints (within 0.01 px) and
/// visibility 1, in the official order.
#[test]
fn centernet_multi_pose_pipeline_writes_the_official_keypoints() {
    let (doc, dir) = run_fixture_pipeline("centernet", "centernet_multi_pose_dla34", None, &[]);
    let case = &doc["cases"][0];
    let text = std::fs::read_to_string(dir.join("out/centernet_multi_pose_dla34/detections.json"))
        .expect("json");
    let ours: Vec<Json> = serde_json::from_str(&text).expect("COCO results array");
    let results = case["results"].as_array().expect("results");
    assert_eq!(ours.len(), results.len(), "number of people");
    for (j, (d, r)) in ours.iter().zip(results).enumerate() {
        assert_eq!(d["category_id"].as_f64(), Some(1.0), "person {j}: category");
        let score = d["score"].as_f64().expect("score");
        assert!(
            (score - r["score"].as_f64().expect("score")).abs() <= 1e-4,
            "person {j}: score"
        );
        let b = floats(&d["bbox"]);
        let xyxy = [b[0], b[1], b[0] + b[2], b[1] + b[3]];
        for (a, want) in xyxy.iter().zip(floats(&r["box"])) {
            assert!(
                (a - want).abs() <= 1e-2,
                "person {j}: box {xyxy:?} vs {}",
                r["box"]
            );
        }
        let kps = floats(&d["keypoints"]);
        let want = floats(&r["kps"]);
        assert_eq!(kps.len(), 51, "person {j}: 17 keypoints of (x, y, v)");
        for k in 0..17 {
            assert!(
                (kps[3 * k] - want[2 * k]).abs() <= 1e-2
                    && (kps[3 * k + 1] - want[2 * k + 1]).abs() <= 1e-2
                    && kps[3 * k + 2] == 1.0,
                "person {j} keypoint {k}: {:?} vs {:?}",
                &kps[3 * k..3 * k + 3],
                &want[2 * k..2 * k + 2]
            );
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// `pipelines/maskformer_r50.toml` on a photo with the MaskFormer fixture's weights, then
/// `engine eval pq` of its COCO panoptic output against the official code's panoptic
/// segmentation (written as COCO panoptic ground truth): every segment must be recognised
/// (RQ 1, with the same classes) and the segments must overlap almost exactly (SQ > 0.99).
#[test]
fn maskformer_pipeline_output_scores_pq_one_against_the_official_segmentation() {
    // The photo named by its image id (the panoptic sink's image_id is the file stem).
    let photos = std::env::temp_dir().join(format!("maskformer-photo-{}", std::process::id()));
    std::fs::create_dir_all(&photos).expect("photos");
    let photo = photos.join("1.png");
    std::fs::copy(repo().join("assets/chelsea.png"), &photo).expect("copy photo");
    // Contiguous class ids out, so that the ground truth below needs no id table.
    let ids = (0..133)
        .map(|i| i.to_string())
        .collect::<Vec<_>>()
        .join(",");
    let (doc, dir) = run_fixture_pipeline(
        "detr",
        "maskformer_r50",
        Some(&photo),
        &[format!("nodes.maskformer.category_ids=[{ids}]")],
    );
    let case = &doc["cases"][0];
    assert_eq!(case["photo"], "chelsea.png");
    // The official segmentation as COCO panoptic ground truth.
    let size = floats(&case["original_size"]);
    let (h, w) = (size[0] as usize, size[1] as usize);
    let runs = floats(&case["panoptic_seg"]["rle"]);
    let mut ids = Vec::with_capacity(h * w);
    for pair in runs.chunks(2) {
        ids.extend(std::iter::repeat_n(pair[0] as u32, pair[1] as usize));
    }
    assert_eq!(ids.len(), h * w);
    let rgb: Vec<u8> = ids
        .iter()
        .flat_map(|&id| [(id % 256) as u8, (id / 256 % 256) as u8, (id / 65536) as u8])
        .collect();
    std::fs::create_dir_all(dir.join("gt")).expect("gt dir");
    plugin_io::image_sink::write_rgb_png(&dir.join("gt/1.png"), w, h, &rgb).expect("gt png");
    let segments: Vec<Json> = case["segments_info"]
        .as_array()
        .expect("segments_info")
        .iter()
        .map(|s| {
            let id = s["id"].as_u64().expect("id") as u32;
            let area = ids.iter().filter(|&&v| v == id).count();
            serde_json::json!({
                "id": id,
                "category_id": s["category_id"].as_u64().expect("class"),
                "iscrowd": 0,
                "area": area,
            })
        })
        .collect();
    // COCO panoptic in Detectron2's contiguous order: 80 things, then 53 stuff classes.
    let categories: Vec<Json> = (0..133)
        .map(|i| serde_json::json!({"id": i, "name": format!("class {i}"), "isthing": u8::from(i < 80)}))
        .collect();
    let gt = serde_json::json!({
        "annotations": [{"image_id": 1, "file_name": "1.png", "segments_info": segments}],
        "categories": categories,
    });
    std::fs::write(dir.join("gt.json"), gt.to_string()).expect("gt json");
    let p = |name: &str| dir.join(name).display().to_string();
    let eval = Command::new(env!("CARGO_BIN_EXE_engine"))
        .args([
            "eval",
            "pq",
            "--gt-json",
            &p("gt.json"),
            "--gt-dir",
            &p("gt"),
            "--pred-json",
            &p("out/maskformer_r50/panoptic.json"),
            "--pred-dir",
            &p("out/maskformer_r50/panoptic"),
            "--json",
        ])
        .current_dir(&dir)
        .output()
        .expect("run engine eval pq");
    assert_eq!(
        eval.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&eval.stderr)
    );
    let pq: Json = serde_json::from_slice(&eval.stdout).expect("PQ JSON");
    let all = &pq["All"];
    assert_eq!(
        all["rq"].as_f64(),
        Some(1.0),
        "every segment recognised: {pq}"
    );
    assert!(all["sq"].as_f64().expect("sq") > 0.99, "{pq}");
    // PQ averages over classes: `n` counts the classes present, not the segments.
    let classes: std::collections::BTreeSet<u64> = segments
        .iter()
        .map(|s| s["category_id"].as_u64().expect("class"))
        .collect();
    assert_eq!(all["n"].as_u64(), Some(classes.len() as u64), "{pq}");
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_dir_all(&photos);
}

/// The `(start, end)` microseconds of each `process` span of the stage named `node` in a
/// Chrome trace.
fn spans(trace: &Json, node: &str) -> Vec<(f64, f64)> {
    let events = trace.as_array().expect("trace events");
    let tid = events
        .iter()
        .find(|e| e["ph"] == "M" && e["args"]["name"].as_str() == Some(&format!("node:{node}")))
        .unwrap_or_else(|| panic!("no thread named {node} in the trace"))["tid"]
        .clone();
    let mut open = None;
    let mut out = Vec::new();
    for e in events
        .iter()
        .filter(|e| e["tid"] == tid && e["name"] == "process")
    {
        let ts = e["ts"].as_f64().expect("ts");
        match e["ph"].as_str() {
            Some("B") => open = Some(ts),
            Some("E") => out.extend(open.take().map(|b| (b, ts))),
            _ => {}
        }
    }
    out
}

#[test]
fn multitask_pipeline_runs_three_heads_side_by_side_on_one_trunk() {
    use base64::Engine as _;
    let doc = fixture_named("densepose_r18_fpn.json");
    let case = &doc["cases"][0];
    assert_eq!(case["head"]["decoder"], true);
    let dir = scratch("multitask");
    // One checkpoint: the DensePose fixture's trunk, box head and DensePose head, with the
    // mask head of the Mask R-CNN fixture and the keypoint head of the Keypoint R-CNN one.
    let pick = |doc: &Json, modules: &[&str]| -> Json {
        Json::Array(
            doc["weights"]
                .as_array()
                .expect("weights")
                .iter()
                .filter(|w| {
                    let name = w["name"].as_str().expect("name");
                    modules.iter().any(|m| name.starts_with(m))
                })
                .cloned()
                .collect(),
        )
    };
    let mut spec = doc["trunk_weights"].as_array().expect("trunk").clone();
    spec.extend(
        case["head_weights"]
            .as_array()
            .expect("head")
            .iter()
            .cloned(),
    );
    let masks = pick(&fixture(), &["roi_heads.mask_"]);
    let keypoints = pick(
        &fixture_named("keypointrcnn_r18_fpn.json"),
        &["roi_heads.keypoint_"],
    );
    spec.extend(masks.as_array().expect("mask").iter().cloned());
    spec.extend(keypoints.as_array().expect("keypoint").iter().cloned());
    let weights = dir.join("multitask_r18.safetensors");
    write_named_weights(&Json::Array(spec), "", &weights);
    let p = &case["params"];
    let w = weights.display();
    let out = run_named_pipeline_with(
        "multitask_r50_fpn.toml",
        &dir,
        &weights,
        &[
            format!("vars.mask_weights={w}"),
            format!("vars.densepose_weights={w}"),
            format!("nodes.preprocess.min_size={}", p["min_size"]),
            format!("nodes.preprocess.max_size={}", p["max_size"]),
            "nodes.backbone.depth=18".into(),
            format!("nodes.backbone.bn_eps={}", p["bn_eps"]),
            "nodes.fpn.depth=18".into(),
            format!(
                "nodes.box_head.detections_per_img={}",
                p["detections_per_img"]
            ),
            "nodes.keypoint_head.layers=[64, 64, 64, 64, 64, 64, 64, 64]".into(),
            "nodes.densepose_head.layers=[64, 64, 64, 64, 64, 64, 64, 64]".into(),
            "nodes.densepose_head.decoder_channels=64".into(),
        ],
        &["--trace", "trace.json"],
    );
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.status.code(), Some(0), "{report}");
    let text = std::fs::read_to_string(dir.join("out/multitask/detections.json")).expect("json");
    let ours: Vec<Json> = serde_json::from_str(&text).expect("COCO results array");
    assert!(dir.join("out/multitask/overlays/000000.png").is_file());
    let theirs = case["json"].as_array().expect("results format");
    assert_eq!(ours.len(), theirs.len(), "one result per detection");
    let (mut same, mut total) = (0usize, 0usize);
    for t in theirs {
        let tb = floats(&t["bbox"]);
        let o = ours
            .iter()
            .find(|o| {
                floats(&o["bbox"])
                    .iter()
                    .zip(&tb)
                    .all(|(a, b)| (a - b).abs() < 1e-3)
            })
            .unwrap_or_else(|| panic!("Detectron2's detection {tb:?} not found"));
        // Every head's result on the one detection.
        assert_eq!(floats(&o["keypoints"]).len(), 51);
        assert!(o["segmentation"]["counts"].is_string());
        assert_eq!(o["densepose"]["shape_chw"], t["densepose"]["shape_chw"]);
        let b64 = |j: &Json| {
            let text: String = j.as_str().expect("base64").split_whitespace().collect();
            base64::engine::general_purpose::STANDARD
                .decode(text)
                .expect("base64")
        };
        let png = b64(&o["densepose"]["labels_uv_str"]);
        let hwc = plugin_io::image_source::decode_image(&png, "densepose").expect("PNG");
        let hwc = hwc.as_slice::<u8>().expect("u8");
        let chw = b64(&t["labels_uv_uint8"]);
        let plane = chw.len() / 3;
        for i in 0..plane {
            for c in 0..3 {
                total += 1;
                same += usize::from(hwc[3 * i + c].abs_diff(chw[c * plane + i]) <= 1);
            }
        }
    }
    assert!(
        same as f64 >= 0.999 * total as f64,
        "DensePose results: {same} of {total} quantized values agree with Detectron2's"
    );
    // The three heads ran side by side: their spans overlap.
    let trace: Json =
        serde_json::from_str(&std::fs::read_to_string(dir.join("trace.json")).expect("trace"))
            .expect("trace JSON");
    let heads = ["mask_head", "keypoint_head", "densepose_head"].map(|n| spans(&trace, n));
    for h in &heads {
        assert_eq!(h.len(), 1, "one frame, one span per head: {heads:?}");
    }
    // The DensePose head runs longest; each of the others ran while it did (the three
    // starting at exactly the same time is not required: a core may be busy for a moment).
    let overlaps = |a: (f64, f64), b: (f64, f64)| a.0 < b.1 && b.0 < a.1;
    let densepose = heads[2][0];
    for h in &heads[..2] {
        assert!(
            overlaps(h[0], densepose),
            "a head did not run beside the DensePose head: {heads:?}"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// The Mask R-CNN fixture with `[pipeline] precision = "bf16"` (which every node that has a
/// `precision` parameter takes: the ResNet body and the FPN), against torchvision's fp32
/// detections. Issue 18 asks for 95% of the detections matched (same label, IoU >= 0.9) on a
/// trained model, which cannot be had here. The fixture's random weights give 100 detections
/// capped by `detections_per_img`, 63 of them overlapping ones of one class with scores from
/// 0.44 to 0.96, where bf16's perturbation (scores move by up to 0.09) flips NMS choices and
/// the cap: 84 of 100 match on AMX, 82 with AVX-512 BF16 (which loses the detection of rank
/// 4 too). So this reports the figures and asserts what a broken bf16 path would miss: at
/// least 75 matched, and their masks agreeing on 99.9% of the pixels. On a CPU without bf16
/// units the pipeline is refused at the `precision` line.
#[test]
fn mask_rcnn_in_bf16_finds_torchvisions_detections() {
    let doc = fixture();
    let (case, sets) = astronaut_case(&doc);
    let dir = scratch("bf16");
    let weights = dir.join("maskrcnn_r18_fpn.safetensors");
    write_weights(&doc, &weights);
    let text =
        std::fs::read_to_string(repo().join("pipelines/mask_rcnn_r50_fpn.toml")).expect("pipeline");
    let text = text.replacen("[pipeline]\n", "[pipeline]\nprecision = \"bf16\"\n", 1);
    let pipeline = dir.join("mask_rcnn_bf16.toml");
    std::fs::write(&pipeline, text).expect("write pipeline");
    let out = run_named_pipeline(pipeline.to_str().expect("path"), &dir, &weights, &sets);
    let stderr = String::from_utf8_lossy(&out.stderr);
    if kernels::layers::bf16::units().is_none() {
        eprintln!("this CPU has no AVX-512 BF16: checking the refusal instead");
        assert_eq!(out.status.code(), Some(2), "{stderr}");
        assert!(
            stderr.contains("mask_rcnn_bf16.toml:23:") && stderr.contains("AVX-512 BF16"),
            "{stderr}"
        );
        return;
    }
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let text = std::fs::read_to_string(dir.join("out/mask_rcnn/detections.json")).expect("json");
    let ours: Vec<Json> = serde_json::from_str(&text).expect("COCO results array");
    let fin = &case["final"];
    let boxes = floats(&fin["boxes"]);
    let scores = floats(&case["detections"]["scores"]);
    let labels = floats(&case["detections"]["labels"]);
    let mut used = vec![false; ours.len()];
    // Torchvision's detections in decreasing score (as `postprocess_detections` returns them).
    assert!(scores.windows(2).all(|w| w[0] >= w[1]));
    let (mut found, mut differ, mut total, mut worst_score) = (0usize, 0usize, 0usize, 0f64);
    for j in 0..scores.len() {
        let theirs = &boxes[j * 4..j * 4 + 4];
        let best = (0..ours.len())
            .filter(|&i| !used[i] && ours[i]["category_id"].as_f64() == Some(labels[j]))
            .map(|i| {
                let b = floats(&ours[i]["bbox"]);
                (i, iou(&[b[0], b[1], b[0] + b[2], b[1] + b[3]], theirs))
            })
            .max_by(|a, b| a.1.total_cmp(&b.1));
        let Some((i, _)) = best.filter(|&(_, o)| o >= 0.9) else {
            eprintln!(
                "unmatched: rank {j} score {:.3} label {}",
                scores[j], labels[j]
            );
            continue;
        };
        used[i] = true;
        found += 1;
        let score = ours[i]["score"].as_f64().expect("score");
        worst_score = worst_score.max((score - scores[j]).abs());
        let (d, t) = mask_pixels_differing(&ours[i]["segmentation"], &fin["masks_rle"][j]);
        differ += d;
        total += t;
    }
    let matched = found as f64 / scores.len().max(1) as f64;
    let agree = 1.0 - differ as f64 / total.max(1) as f64;
    eprintln!(
        "bf16 ({}): {found} of {} torchvision detections matched (same label, IoU >= 0.9), {} detections in all; scores within {worst_score:.2e}; mask pixels agree {agree:.5}",
        kernels::layers::bf16::units().map_or("", |u| u.name()),
        scores.len(),
        ours.len()
    );
    assert!(matched >= 0.75, "{found} of {} matched", scores.len());
    assert!(agree >= 0.999, "masks agree on {agree}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn wrong_weights_are_named_with_the_node_and_the_line() {
    let doc = fixture();
    let dir = scratch("wrong");
    let weights = dir.join("r18.safetensors");
    write_weights(&doc, &weights);
    // A ResNet-18 checkpoint where the pipeline expects ResNet-50.
    let out = run_pipeline(&dir, &weights, &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("mask_rcnn_r50_fpn.toml:")
            && stderr.contains("node \"backbone\"")
            && stderr.contains("r18.safetensors")
            && stderr.contains("mis-shaped"),
        "{stderr}"
    );
    // A path that is not there.
    let out = run_pipeline(&dir, &dir.join("absent.pth"), &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("cannot read weights file") && stderr.contains("absent.pth"),
        "{stderr}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// `pipelines/cornernet_hg104.toml` with the CornerNet fixture's weights (its small `kp`,
/// switched with `--set`), on coffee.png: the COCO results are the official `kp_detection`
/// results (the image and its mirror, soft-NMS, the best 100), class by class in the official
/// order (same category ids, scores within 1e-4, boxes within 0.01 px).
#[test]
fn cornernet_pipeline_matches_the_official_code_through_the_engine() {
    let path = repo().join("plugins/centernet/tests/fixtures/cornernet_small.json");
    let doc: Json =
        serde_json::from_str(&std::fs::read_to_string(&path).expect("fixture")).expect("json");
    let dir = scratch("cornernet_hg104");
    let weights = dir.join("cornernet.safetensors");
    write_named_weights(&doc["weights"], "", &weights);
    let c = &doc["config"];
    let int = |k: &str| c[k].as_i64().expect("config int");
    let list = |k: &str| {
        let v: Vec<String> = floats(&c[k]).iter().map(|v| format!("{v}")).collect();
        format!("[{}]", v.join(", "))
    };
    let case = doc["cases"]
        .as_array()
        .expect("cases")
        .iter()
        .find(|c| c["photo"] == "coffee.png")
        .expect("coffee.png case");
    let settings = [
        format!(
            "nodes.images.path={}",
            repo().join("assets/coffee.png").display()
        ),
        format!("nodes.backbone.levels={}", int("n")),
        format!("nodes.backbone.stacks={}", int("nstack")),
        format!("nodes.backbone.dims={}", list("dims")),
        format!("nodes.backbone.modules={}", list("modules")),
        format!("nodes.backbone.cnv_dim={}", int("cnv_dim")),
        format!("nodes.cornernet.cnv_dim={}", int("cnv_dim")),
        format!("nodes.cornernet.head_conv={}", int("head_dim")),
    ];
    let out = run_named_pipeline("cornernet_hg104.toml", &dir, &weights, &settings);
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.status.code(), Some(0), "{report}");
    let text =
        std::fs::read_to_string(dir.join("out/cornernet_hg104/detections.json")).expect("json");
    let ours: Vec<Json> = serde_json::from_str(&text).expect("COCO results array");
    let ids = floats(&doc["coco_category_ids"]);
    let want: Vec<(i64, Vec<f64>)> = case["results"]
        .as_array()
        .expect("results")
        .iter()
        .flat_map(|r| {
            let id = ids[r["class"].as_u64().expect("class") as usize - 1] as i64;
            r["rows"]
                .as_array()
                .expect("rows")
                .iter()
                .map(move |row| (id, floats(row)))
        })
        .collect();
    assert_eq!(ours.len(), want.len(), "number of results: {text}");
    for (i, (o, (id, row))) in ours.iter().zip(&want).enumerate() {
        let b = floats(&o["bbox"]);
        let xyxy = [b[0], b[1], b[0] + b[2], b[1] + b[3]];
        assert_eq!(o["category_id"].as_i64(), Some(*id), "result {i}: {o}");
        assert!(
            (o["score"].as_f64().expect("score") - row[4]).abs() <= 1e-4
                && xyxy.iter().zip(row).all(|(a, b)| (a - b).abs() <= 1e-2),
            "result {i}: ours {o}, official {row:?}"
        );
    }
}

/// `pipelines/panoptic_fpn_r50.toml` through the engine on Detectron2's fixture
/// (`plugins/rcnn/tests/fixtures/panoptic_fpn_d2.json`, its sizes set on the command line):
/// the panoptic PNG holds Detectron2's segment map, and the JSON its segments with the
/// contiguous classes mapped to COCO panoptic's category ids by the pipeline's tables.
#[test]
fn panoptic_fpn_pipeline_matches_detectron2_through_the_engine() {
    let doc = fixture_named("panoptic_fpn_d2.json");
    let dir = scratch("panoptic-fpn");
    let weights = dir.join("panoptic_fpn.safetensors");
    write_weights(&doc, &weights);
    let case = &doc["cases"][0];
    let photo = repo()
        .join("assets")
        .join(case["photo"].as_str().expect("photo"));
    let cfg = &doc["config"];
    let out = run_named_pipeline(
        "panoptic_fpn_r50.toml",
        &dir,
        &weights,
        &[
            format!("nodes.images.path={}", photo.display()),
            format!("nodes.preprocess.min_size={}", cfg["INPUT.MIN_SIZE_TEST"]),
            format!("nodes.preprocess.max_size={}", cfg["INPUT.MAX_SIZE_TEST"]),
        ],
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (h, w) = (
        case["original_size"][0].as_u64().expect("h") as usize,
        case["original_size"][1].as_u64().expect("w") as usize,
    );
    let png = dir.join("out/panoptic_fpn_r50/panoptic/000000.png");
    let bytes = std::fs::read(&png).expect("panoptic PNG");
    let rgb = plugin_io::image_source::decode_image(&bytes, "panoptic PNG").expect("decode");
    assert_eq!(rgb.shape(), [h, w, 3]);
    let ids: Vec<i32> = rgb
        .as_slice::<u8>()
        .expect("u8")
        .chunks_exact(3)
        .map(|p| i32::from(p[0]) + 256 * i32::from(p[1]) + 65536 * i32::from(p[2]))
        .collect();
    use base64::Engine as _;
    let want: Vec<i32> = base64::engine::general_purpose::STANDARD
        .decode(case["panoptic"]["map"].as_str().expect("map"))
        .expect("base64")
        .chunks_exact(4)
        .map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    let differ = ids.iter().zip(&want).filter(|(a, b)| a != b).count();
    assert_eq!(
        differ, 0,
        "pixels of the panoptic map differ from Detectron2's"
    );
    // The pipeline's id tables: Detectron2's builtin_meta.py for COCO panoptic ("separated").
    let text =
        std::fs::read_to_string(repo().join("pipelines/panoptic_fpn_r50.toml")).expect("toml");
    let table = |name: &str| -> Vec<i64> {
        let start = text.find(&format!("{name} = [")).expect("id table") + name.len() + 4;
        let end = start + text[start..].find(']').expect("end of the table");
        text[start..end]
            .split(',')
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .map(|v| v.parse().expect("id"))
            .collect()
    };
    let (things, stuff) = (table("thing_category_ids"), table("stuff_category_ids"));
    assert_eq!((things.len(), stuff.len()), (80, 54));
    let ann: Json = serde_json::from_str(
        &std::fs::read_to_string(dir.join("out/panoptic_fpn_r50/panoptic.json")).expect("json"),
    )
    .expect("panoptic JSON");
    let ours = ann["annotations"][0]["segments_info"]
        .as_array()
        .expect("segments_info");
    let theirs = case["panoptic"]["segments_info"]
        .as_array()
        .expect("segments");
    assert_eq!(ours.len(), theirs.len());
    for (o, t) in ours.iter().zip(theirs) {
        assert_eq!(o["id"], t["id"]);
        let c = t["category_id"].as_u64().expect("class") as usize;
        let mapped = if t["isthing"].as_bool() == Some(true) {
            things[c]
        } else {
            stuff[c]
        };
        assert_eq!(
            o["category_id"].as_i64(),
            Some(mapped),
            "segment {}",
            t["id"]
        );
        let area = want
            .iter()
            .filter(|&&v| i64::from(v) == t["id"].as_i64().expect("id"))
            .count();
        assert_eq!(o["area"].as_u64(), Some(area as u64), "segment {}", t["id"]);
    }
}
