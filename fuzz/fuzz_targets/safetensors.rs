//! The safetensors reader (`kernels::weights::Weights::load` of a `.safetensors` file): a
//! load or a clean error, never a panic; every tensor it returns is readable.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let path = engine_fuzz::scratch_file("weights.safetensors", data);
    if let Ok(w) = kernels::weights::Weights::load(&path) {
        for name in w.names() {
            if let Some(t) = w.get(name) {
                let _ = t.describe();
            }
        }
    }
});
