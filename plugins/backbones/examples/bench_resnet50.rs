//! Times a full ResNet-50 forward pass (body, global average pool, fc 2048 → 1000) on one
//! `3 x SIZE x SIZE` input, batch 1 — the "ResNet-50 at 224x224 in fp32" — with the
//! body's weights from a torchvision checkpoint (`backbone.body.*` of a Mask R-CNN state dict
//! or a plain ResNet-50) and a generated fc. Driven by `tests/reference/bench_mask_rcnn.py`,
//! which times torchvision's `resnet50` in the same run:
//!
//!     cargo run --release -p plugin-backbones --example bench_resnet50 -- WEIGHTS [REPS] [SIZE]

use std::path::Path;
use std::time::Instant;

use kernels::layers::{Activation, Linear};
use kernels::weights::{generated_tensor, Weights};
use ndarray::{Array2, Array4};
use plugin_backbones::{ResNet, ResNetConfig};

// The allocator is the library's own (`kernels::engine_allocator!` in plugin_backbones); the
// engine's setting too: freed pages kept committed.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    kernels::process::memory_policy();
    let args: Vec<String> = std::env::args().collect();
    let path = args
        .get(1)
        .ok_or("usage: bench_resnet50 WEIGHTS [REPS] [SIZE]")?;
    let reps: usize = args.get(2).map(|s| s.parse()).transpose()?.unwrap_or(20);
    let size: usize = args.get(3).map(|s| s.parse()).transpose()?.unwrap_or(224);
    let weights = Weights::load(Path::new(path))?;
    let config = ResNetConfig {
        returned_layers: vec![4],
        ..Default::default()
    };
    let body = ResNet::from_weights(&weights, "backbone.body.", config)?;
    let fc_w = generated_tensor("fc.weight", &[1000, 2048], 0.04, 0.0)?;
    let fc = Linear::new(fc_w.view::<f32>()?.into_dimensionality()?, None)?
        .with_activation(Activation::Identity);
    let x = Array4::from_shape_fn((1, 3, size, size), |(_, c, y, x)| {
        ((c * 31 + y * 7 + x * 3) % 23) as f32 / 11.0 - 1.0
    });
    let forward = || -> Result<Array2<f32>, Box<dyn std::error::Error>> {
        let c5 = body.forward(x.view())?.pop().ok_or("no c5")?.1;
        let (n, c, h, w) = c5.dim();
        let pooled = c5
            .into_shape_with_order((n, c, h * w))?
            .mean_axis(ndarray::Axis(2))
            .ok_or("empty map")?;
        Ok(fc.forward(pooled.view())?)
    };
    forward()?;
    let mut t: Vec<f64> = (0..reps.max(1))
        .map(|_| {
            let s = Instant::now();
            let _ = forward();
            s.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    t.sort_by(f64::total_cmp);
    println!(
        "resnet50 {size}x{size} batch 1: {:.1} ms (median of {reps}, {} rayon threads; min {:.1} ms)",
        t[t.len() / 2],
        kernels::process::threads(),
        t[0]
    );
    Ok(())
}
