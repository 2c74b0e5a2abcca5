//! The pipeline parser and checker (`engine::graph::load` with the built-in nodes): any text
//! gives a pipeline or diagnostics at file:line:col, never a panic.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let path = engine_fuzz::scratch_file("pipeline.toml", data);
    let mut registry = engine::registry::Registry::builtin();
    if let Err(e) = engine::graph::load(&path, &[], &mut registry) {
        // Rendering the diagnostics is part of what a user sees.
        let _ = e.to_string();
    }
});
