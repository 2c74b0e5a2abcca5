//! A planned run of a graph model allocates nothing once warm (zero allocations per frame in
//! steady state). Its own test binary, because it counts every allocation of the process
//! (the library's global allocator, `kernels::process::EngineAllocator`, counts them): a test
//! running beside it would be counted too.
//!
//! Models: `models/` at the repository root (`scripts/fetch-models.sh`); when absent the test
//! prints "SKIPPED" and passes.

use std::path::{Path, PathBuf};

use kernels::Tensor;
use plugin_graph_model::GraphModel;

fn models_dir() -> Option<PathBuf> {
    let dir = std::env::var_os("MODELS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models"));
    dir.join("iris.json").is_file().then_some(dir)
}

#[test]
fn planned_runs_allocate_nothing() {
    let Some(dir) = models_dir() else {
        println!("SKIPPED: run scripts/fetch-models.sh (no models/ folder with the TF.js models)");
        return;
    };
    // Two threads, so that the parallel loops hand work over as they do in a pipeline.
    kernels::process::use_threads(2);
    for name in ["iris", "facemesh", "selfie", "blazeface", "meet"] {
        let model = GraphModel::load(&dir.join(format!("{name}.json"))).unwrap();
        let plan = model
            .plan_status()
            .unwrap_or_else(|why| panic!("{name}: no plan: {why}"));
        assert_eq!(plan.tail_ops, 0, "{name}: ops run op by op after the plan");
        let shape: Vec<usize> = model.inputs()[0]
            .shape
            .iter()
            .map(|&d| d.max(1) as usize)
            .collect();
        let n: usize = shape.iter().product();
        // A ramp, so that activations take both signs.
        let x = Tensor::from_vec(
            &shape,
            (0..n).map(|i| (i % 255) as f32 / 127.5 - 1.0).collect(),
        )
        .unwrap();
        let feeds = [x];
        let mut outs: Vec<Vec<f32>> = model
            .planned_output_shapes()
            .unwrap()
            .iter()
            .map(|s| vec![0f32; s.iter().product()])
            .collect();
        let counted = kernels::process::in_pool(|| {
            let mut views: Vec<&mut [f32]> = outs.iter_mut().map(Vec::as_mut_slice).collect();
            for _ in 0..2 {
                model.run_into(&feeds, &mut views).unwrap();
            }
            let before = kernels::process::allocations();
            for _ in 0..10 {
                model.run_into(&feeds, &mut views).unwrap();
            }
            kernels::process::allocations() - before
        });
        println!(
            "{name}: {} steps ({} in forks), {} KiB arena, {counted} allocations in 10 runs",
            plan.steps,
            plan.forked_steps,
            plan.arena_bytes / 1024
        );
        assert_eq!(counted, 0, "{name}: a planned run allocated");
        // The counter works: the op-by-op executor allocates each op's result.
        let before = kernels::process::allocations();
        let want = model.run_op_by_op(&feeds, &[]).unwrap();
        let op_by_op = kernels::process::allocations() - before;
        assert!(
            op_by_op >= plan.steps as u64,
            "{name}: {op_by_op} allocations op by op"
        );
        // The outputs are the op-by-op executor's.
        for (got, want) in outs.iter().zip(&want) {
            let want = want.as_slice::<f32>().unwrap();
            assert!(
                got.iter()
                    .zip(want)
                    .all(|(a, b)| a.to_bits() == b.to_bits()),
                "{name}: outputs differ"
            );
        }
    }
}
