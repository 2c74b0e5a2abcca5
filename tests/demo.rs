//! The demo pipeline (`pipelines/demo.toml`) through the real `engine` binary on the photos in
//! assets/, with the pretrained models in models/ (`scripts/fetch-models.sh`). Without
//! models the test prints "SKIPPED: run scripts/fetch-models.sh" and passes.
//!
//! The pipeline runs in a scratch directory (its outputs land there), with the `assets/` and
//! `models/` paths of the pipeline pointed at the repository's.

use std::path::{Path, PathBuf};
use std::process::Command;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The models folder (`MODELS_DIR` or models/), or `None` after printing why the test skips.
fn models(repo: &Path) -> Option<PathBuf> {
    let models = std::env::var_os("MODELS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo.join("models"));
    if models.join("centernet.json").is_file() {
        return Some(models);
    }
    println!(
        "SKIPPED: run scripts/fetch-models.sh (no models in {})",
        models.display()
    );
    None
}

/// Category ids of a record's instances, with their scores, for those whose score >= min.
fn categories(record: &serde_json::Value, min: f64) -> Vec<i64> {
    record["instances"]
        .as_array()
        .expect("instances")
        .iter()
        .filter(|i| i["score"].as_f64().unwrap_or(0.0) >= min)
        .map(|i| i["category_id"].as_i64().expect("category_id"))
        .collect()
}

#[test]
fn demo_pipeline_finds_people_faces_meshes_cat_and_cup() {
    let repo = repo();
    let Some(models) = models(&repo) else {
        return;
    };
    let dir = std::env::temp_dir().join(format!("engine-demo-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch dir");
    let text = std::fs::read_to_string(repo.join("pipelines/demo.toml")).expect("demo.toml");
    let text = text
        .replace(
            "\"assets/",
            &format!("\"{}/", repo.join("assets").display()),
        )
        .replace("\"models/", &format!("\"{}/", models.display()));
    let pipeline = dir.join("demo.toml");
    std::fs::write(&pipeline, text).expect("write pipeline");
    let out = Command::new(env!("CARGO_BIN_EXE_engine"))
        .args(["run", pipeline.to_str().expect("utf-8 path")])
        .current_dir(&dir)
        .output()
        .expect("run engine");
    assert!(
        out.status.success(),
        "engine run failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let jsonl = std::fs::read_to_string(dir.join("out/demo/detections.jsonl")).expect("detections");
    let records: Vec<serde_json::Value> = jsonl
        .lines()
        .map(|l| serde_json::from_str(l).expect("json line"))
        .collect();
    assert_eq!(records.len(), 4, "one record per photo");
    let by_photo = |name: &str| {
        records
            .iter()
            .find(|r| r["source"].as_str().is_some_and(|s| s.ends_with(name)))
            .unwrap_or_else(|| panic!("no record for {name}"))
    };
    // person (1) and face (91) on both photos of people, with MoveNet keypoints on a person.
    for photo in ["astronaut.png", "camera.png"] {
        let r = by_photo(photo);
        let cats = categories(r, 0.5);
        assert!(cats.contains(&1) && cats.contains(&91), "{photo}: {cats:?}");
        let posed = r["instances"]
            .as_array()
            .expect("instances")
            .iter()
            .any(|i| {
                i["keypoints"].as_array().is_some_and(|k| {
                    k.chunks(3)
                        .filter(|p| p[2].as_f64().unwrap_or(0.0) > 0.0)
                        .count()
                        >= 8
                })
            });
        assert!(
            posed,
            "{photo}: no instance with 8 or more confident keypoints"
        );
        // The face carries its FaceMesh: 468 points (x, y, z) inside the photo.
        let (w, h) = (
            r["width"].as_f64().expect("width"),
            r["height"].as_f64().expect("height"),
        );
        let face = r["instances"]
            .as_array()
            .expect("instances")
            .iter()
            .find(|i| i["category_id"] == 91)
            .expect("face");
        let mesh = face["landmarks"].as_array().expect("face landmarks");
        assert_eq!(mesh.len(), 468 * 3, "{photo}: face mesh size");
        let inside = mesh
            .chunks(3)
            .filter(|p| {
                let (x, y) = (p[0].as_f64().unwrap_or(-1.0), p[1].as_f64().unwrap_or(-1.0));
                (0.0..=w).contains(&x) && (0.0..=h).contains(&y)
            })
            .count();
        assert_eq!(inside, 468, "{photo}: mesh points inside the photo");
    }
    // The cat: CenterNet calls it an animal (dog 0.43, as TF.js does). BlazeFace finds its
    // face (0.85), but FaceMesh's face score on that crop is 0.0015, so (as in human) there is
    // no face instance.
    let cats = categories(by_photo("chelsea.png"), 0.3);
    assert!(
        cats.contains(&17) || cats.contains(&18),
        "chelsea: {cats:?}"
    );
    assert!(!cats.contains(&91), "chelsea: {cats:?}");
    // The coffee: a cup (COCO 47).
    let cats = categories(by_photo("coffee.png"), 0.3);
    assert!(cats.contains(&47), "coffee: {cats:?}");

    for k in 0..4 {
        let png = dir.join(format!("out/demo/overlays/{k:06}.png"));
        let bytes = std::fs::read(&png).unwrap_or_else(|e| panic!("{}: {e}", png.display()));
        assert!(
            bytes.starts_with(b"\x89PNG"),
            "{} is not a PNG",
            png.display()
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// The tracking demo (`pipelines/track_people.toml`) on the first frames of the real clip,
/// given twice as two videos of one folder: each video is a stream of its own, so the tracker
/// starts afresh and the second stream's tracks are exactly the first's (no state leaks from
/// one stream into the next); each stream becomes its own MP4 with every frame.
#[test]
fn track_people_tracks_the_clip_and_streams_do_not_share_state() {
    let repo = repo();
    let Some(models) = models(&repo) else {
        return;
    };
    let dir = std::env::temp_dir().join(format!("engine-track-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let clips = dir.join("clips");
    std::fs::create_dir_all(&clips).expect("scratch dir");
    for name in ["a.mp4", "b.mp4"] {
        std::fs::copy(repo.join("assets/vtest_baseline.mp4"), clips.join(name)).expect("copy clip");
    }
    let text = std::fs::read_to_string(repo.join("pipelines/track_people.toml"))
        .expect("track_people.toml")
        .replace("\"models/", &format!("\"{}/", models.display()));
    let pipeline = dir.join("track_people.toml");
    std::fs::write(&pipeline, text).expect("write pipeline");
    const FRAMES: usize = 12;
    let out = Command::new(env!("CARGO_BIN_EXE_engine"))
        .args([
            "run",
            pipeline.to_str().expect("utf-8 path"),
            "--set",
            &format!("nodes.video.path={}", clips.display()),
            "--set",
            &format!("nodes.video.max_frames={FRAMES}"),
        ])
        .current_dir(&dir)
        .output()
        .expect("run engine");
    assert!(
        out.status.success(),
        "engine run failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // MOTChallenge lines, frames from 1 in each stream: the second stream repeats the first.
    let text = std::fs::read_to_string(dir.join("out/track_people/tracks.txt")).expect("tracks");
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines.len().is_multiple_of(2), "{text}");
    let (first, second) = lines.split_at(lines.len() / 2);
    assert_eq!(
        first, second,
        "the second stream's tracks differ from the first's"
    );
    let ids: std::collections::BTreeSet<i64> = first
        .iter()
        .map(|l| {
            l.split(',')
                .nth(1)
                .and_then(|v| v.parse().ok())
                .expect("track id")
        })
        .collect();
    // The walkers of the clip's first frames keep their ids: three tracks over 12 frames.
    assert!(ids.len() >= 3 && ids.contains(&1), "{ids:?}");
    assert!(first.len() >= 3 * FRAMES - 3, "{} track lines", first.len());
    let last_frame = first
        .last()
        .and_then(|l| l.split(',').next())
        .expect("frame");
    assert_eq!(last_frame, FRAMES.to_string());
    // One MP4 per stream, H.264 that our own source reads back, every frame in it.
    for file in ["tracked.mp4", "tracked-1.mp4"] {
        let video = dir.join("out/track_people").join(file);
        let mut reader = plugin_io::video::open_video(&video).expect("written video");
        let mut frames = 0;
        while reader.next_frame().expect("frame").is_some() {
            frames += 1;
        }
        assert_eq!(frames, FRAMES, "{file}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
