//! The checkpoint reader (`kernels::weights::Weights::load`): PyTorch ZIP and legacy
//! `torch.save` files, `.tar`, and Detectron2 `.pkl` pickles of numpy arrays (the restricted
//! unpickler). The first byte picks the file name the reader sees (`.pth`, `.pkl`, `.tar`);
//! the rest is the file. A load or a clean error, never a panic.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Some((&kind, bytes)) = data.split_first() else {
        return;
    };
    let name = match kind % 3 {
        0 => "checkpoint.pth",
        1 => "checkpoint.pkl",
        _ => "checkpoint.tar",
    };
    let path = engine_fuzz::scratch_file(name, bytes);
    if let Ok(w) = kernels::weights::Weights::load(&path) {
        for name in w.names() {
            let _ = w.get(name).map(|t| t.shape().iter().product::<usize>());
        }
    }
});
