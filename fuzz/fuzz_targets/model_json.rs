//! The TF.js graph-model loader (`plugin_graph_model`: `model.json` with its weight shards,
//! then the graph built from it). The input is the `model.json` text, then a NUL byte, then
//! the bytes every shard path reads. A model or a clean error, never a panic.
#![no_main]

use std::path::Path;

use plugin_graph_model::graph::GraphModel;
use plugin_graph_model::model::ModelFile;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let (json, shard) = match data.iter().position(|&b| b == 0) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[][..]),
    };
    let Ok(text) = std::str::from_utf8(json) else {
        return;
    };
    let read = |_: &str| Ok(shard.to_vec());
    if let Ok(m) = ModelFile::parse(Path::new("model.json"), text, &read) {
        let _ = GraphModel::from_model(m);
    }
});
