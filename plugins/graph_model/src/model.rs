//! Reading a TF.js graph model: `model.json` (`modelTopology.node`, `weightsManifest`,
//! `signature`) and its weight shards, with dequantisation of uint8/uint16/float16 weights.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use half::f16;
use kernels::Tensor;
use serde_json::{Map, Value as Json};

use crate::error::GraphModelError;

/// One node of `modelTopology.node`.
#[derive(Clone, Debug, PartialEq)]
pub struct NodeDef {
    pub name: String,
    pub op: String,
    /// Data inputs ("node", "node:1"); control inputs ("^node") are dropped.
    pub inputs: Vec<String>,
    pub attr: Map<String, Json>,
}

/// A signature entry: the key users see and the tensor it names ("Identity:0").
#[derive(Clone, Debug, PartialEq)]
pub struct SignatureEntry {
    pub key: String,
    pub tensor: String,
}

/// Reads one weight shard by its manifest path; on failure, the file and the I/O error.
pub type ShardReader<'a> = &'a dyn Fn(&str) -> Result<Vec<u8>, (PathBuf, std::io::Error)>;

/// A parsed `model.json` with its weights loaded.
#[derive(Debug)]
pub struct ModelFile {
    pub path: PathBuf,
    pub nodes: Vec<NodeDef>,
    pub weights: HashMap<String, Tensor>,
    pub signature_inputs: Vec<SignatureEntry>,
    pub signature_outputs: Vec<SignatureEntry>,
}

/// Element type of a stored weight.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum StoredDType {
    F32,
    I32,
    Bool,
}

/// How a weight is stored in the shard bytes.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Quant {
    None,
    /// `value = q * scale + min`.
    U8 {
        scale: f32,
        min: f32,
    },
    U16 {
        scale: f32,
        min: f32,
    },
    F16,
}

impl Quant {
    fn bytes_per_element(self, dtype: StoredDType) -> usize {
        match self {
            Quant::None => match dtype {
                StoredDType::F32 | StoredDType::I32 => 4,
                StoredDType::Bool => 1,
            },
            Quant::U8 { .. } => 1,
            Quant::U16 { .. } | Quant::F16 => 2,
        }
    }
}

fn malformed(file: &Path, msg: impl Into<String>) -> GraphModelError {
    GraphModelError::Malformed {
        file: file.to_path_buf(),
        msg: msg.into(),
    }
}

impl ModelFile {
    /// Reads `model.json` and every weight shard it names (relative to its folder).
    pub fn load(path: &Path) -> Result<ModelFile, GraphModelError> {
        let text =
            kernels::files::read_regular_to_string(path).map_err(|source| GraphModelError::Io {
                file: path.to_path_buf(),
                source,
            })?;
        let dir = path.parent().unwrap_or(Path::new("."));
        ModelFile::parse(path, &text, &|name: &str| {
            let file = dir.join(name);
            kernels::files::read_regular(&file).map_err(|source| (file, source))
        })
    }

    /// Parses `model.json` text; `read_shard` returns the bytes of a shard path or the file
    /// that could not be read.
    pub fn parse(
        path: &Path,
        text: &str,
        read_shard: ShardReader<'_>,
    ) -> Result<ModelFile, GraphModelError> {
        let json: Json = serde_json::from_str(text)
            .map_err(|e| malformed(path, format!("not valid JSON: {e}")))?;
        let root = json
            .as_object()
            .ok_or_else(|| malformed(path, "the top level is not an object"))?;
        if let Some(format) = root.get("format").and_then(Json::as_str) {
            if format != "graph-model" {
                return Err(malformed(
                    path,
                    format!("format is \"{format}\"; only TF.js graph models (\"graph-model\") are supported"),
                ));
            }
        }
        let topology = root
            .get("modelTopology")
            .and_then(Json::as_object)
            .ok_or_else(|| malformed(path, "no \"modelTopology\" object"))?;
        let node_list = topology
            .get("node")
            .and_then(Json::as_array)
            .ok_or_else(|| malformed(path, "no \"modelTopology.node\" array"))?;
        let mut nodes = Vec::with_capacity(node_list.len());
        for (i, n) in node_list.iter().enumerate() {
            nodes.push(parse_node(path, i, n)?);
        }
        if let Some(funcs) = topology
            .get("library")
            .and_then(|l| l.get("function"))
            .and_then(Json::as_array)
        {
            if !funcs.is_empty() {
                return Err(malformed(
                    path,
                    "the graph has library functions (control flow); they are not supported",
                ));
            }
        }
        let (signature_inputs, signature_outputs) = match root.get("signature") {
            Some(sig) if !sig.is_null() => (
                parse_signature(path, sig, "inputs")?,
                parse_signature(path, sig, "outputs")?,
            ),
            _ => (Vec::new(), Vec::new()),
        };
        let manifest = root
            .get("weightsManifest")
            .and_then(Json::as_array)
            .ok_or_else(|| malformed(path, "no \"weightsManifest\" array"))?;
        let mut weights = HashMap::new();
        for (g, group) in manifest.iter().enumerate() {
            load_group(path, g, group, read_shard, &mut weights)?;
        }
        Ok(ModelFile {
            path: path.to_path_buf(),
            nodes,
            weights,
            signature_inputs,
            signature_outputs,
        })
    }
}

fn parse_node(path: &Path, i: usize, n: &Json) -> Result<NodeDef, GraphModelError> {
    let obj = n
        .as_object()
        .ok_or_else(|| malformed(path, format!("modelTopology.node[{i}] is not an object")))?;
    let name = obj
        .get("name")
        .and_then(Json::as_str)
        .ok_or_else(|| malformed(path, format!("modelTopology.node[{i}] has no \"name\"")))?;
    let op = obj.get("op").and_then(Json::as_str).ok_or_else(|| {
        malformed(
            path,
            format!("modelTopology.node[{i}] (\"{name}\") has no \"op\""),
        )
    })?;
    let mut inputs = Vec::new();
    if let Some(list) = obj.get("input") {
        let list = list.as_array().ok_or_else(|| {
            malformed(path, format!("node \"{name}\": \"input\" is not an array"))
        })?;
        for v in list {
            let s = v.as_str().ok_or_else(|| {
                malformed(path, format!("node \"{name}\": an input is not a string"))
            })?;
            if !s.starts_with('^') {
                inputs.push(s.to_string());
            }
        }
    }
    let attr = match obj.get("attr") {
        None => Map::new(),
        Some(a) => a.as_object().cloned().ok_or_else(|| {
            malformed(path, format!("node \"{name}\": \"attr\" is not an object"))
        })?,
    };
    Ok(NodeDef {
        name: name.to_string(),
        op: op.to_string(),
        inputs,
        attr,
    })
}

fn parse_signature(
    path: &Path,
    sig: &Json,
    which: &str,
) -> Result<Vec<SignatureEntry>, GraphModelError> {
    let Some(map) = sig.get(which) else {
        return Ok(Vec::new());
    };
    let map = map
        .as_object()
        .ok_or_else(|| malformed(path, format!("signature.{which} is not an object")))?;
    let mut out = Vec::new();
    for (key, v) in map {
        let tensor = v
            .get("name")
            .and_then(Json::as_str)
            .ok_or_else(|| malformed(path, format!("signature.{which}.{key} has no \"name\"")))?;
        out.push(SignatureEntry {
            key: key.clone(),
            tensor: tensor.to_string(),
        });
    }
    Ok(out)
}

fn json_f32(v: Option<&Json>) -> Option<f32> {
    v.and_then(Json::as_f64).map(|x| x as f32)
}

fn load_group(
    path: &Path,
    g: usize,
    group: &Json,
    read_shard: ShardReader<'_>,
    weights: &mut HashMap<String, Tensor>,
) -> Result<(), GraphModelError> {
    let paths = group
        .get("paths")
        .and_then(Json::as_array)
        .ok_or_else(|| malformed(path, format!("weightsManifest[{g}] has no \"paths\" array")))?;
    let entries = group
        .get("weights")
        .and_then(Json::as_array)
        .ok_or_else(|| {
            malformed(
                path,
                format!("weightsManifest[{g}] has no \"weights\" array"),
            )
        })?;
    // Parse every entry first: their sizes tell how many bytes the shards must hold.
    struct Entry {
        name: String,
        shape: Vec<usize>,
        dtype: StoredDType,
        quant: Quant,
        offset: usize,
        nbytes: usize,
    }
    let mut parsed = Vec::with_capacity(entries.len());
    let mut offset = 0usize;
    for (i, w) in entries.iter().enumerate() {
        let name = w.get("name").and_then(Json::as_str).ok_or_else(|| {
            malformed(
                path,
                format!("weightsManifest[{g}].weights[{i}] has no \"name\""),
            )
        })?;
        let werr = |msg: String| GraphModelError::Weight {
            file: path.to_path_buf(),
            tensor: name.to_string(),
            msg,
        };
        let shape_json = w
            .get("shape")
            .and_then(Json::as_array)
            .ok_or_else(|| werr("no \"shape\" array".into()))?;
        let mut shape = Vec::with_capacity(shape_json.len());
        for d in shape_json {
            let d = d.as_u64().ok_or_else(|| {
                werr(format!(
                    "shape {shape_json:?} has a non-integer or negative dimension"
                ))
            })?;
            shape.push(usize::try_from(d).map_err(|_| werr("dimension too large".into()))?);
        }
        let numel = shape
            .iter()
            .try_fold(1usize, |a, &d| a.checked_mul(d))
            .ok_or_else(|| werr(format!("shape {shape:?} overflows")))?;
        let dtype = match w.get("dtype").and_then(Json::as_str) {
            Some("float32") => StoredDType::F32,
            Some("int32") => StoredDType::I32,
            Some("bool") => StoredDType::Bool,
            Some(other) => {
                return Err(werr(format!(
                    "unknown dtype \"{other}\" (supported: float32, int32, bool)"
                )))
            }
            None => return Err(werr("no \"dtype\"".into())),
        };
        let quant = match w.get("quantization") {
            None | Some(Json::Null) => Quant::None,
            Some(q) => {
                let qd = q.get("dtype").and_then(Json::as_str);
                let scale = json_f32(q.get("scale"));
                let min = json_f32(q.get("min"));
                match qd {
                    Some("float16") => Quant::F16,
                    Some("uint8") | Some("uint16") => {
                        let (Some(scale), Some(min)) = (scale, min) else {
                            return Err(werr(format!(
                                "{} quantisation needs \"scale\" and \"min\"",
                                qd.unwrap_or_default()
                            )));
                        };
                        if qd == Some("uint8") {
                            Quant::U8 { scale, min }
                        } else {
                            Quant::U16 { scale, min }
                        }
                    }
                    Some(other) => {
                        return Err(werr(format!(
                            "unknown quantisation dtype \"{other}\" (supported: uint8, uint16, float16)"
                        )))
                    }
                    None => return Err(werr("quantization has no \"dtype\"".into())),
                }
            }
        };
        if quant != Quant::None && dtype == StoredDType::Bool {
            return Err(werr("a bool weight cannot be quantised".into()));
        }
        let nbytes = numel
            .checked_mul(quant.bytes_per_element(dtype))
            .ok_or_else(|| werr("size overflows".into()))?;
        parsed.push(Entry {
            name: name.to_string(),
            shape,
            dtype,
            quant,
            offset,
            nbytes,
        });
        offset = offset
            .checked_add(nbytes)
            .ok_or_else(|| werr("group size overflows".into()))?;
    }
    let needed = offset;

    // Read the shards, remembering where each begins.
    let mut data = Vec::new();
    let mut shard_spans: Vec<(String, usize, usize)> = Vec::new();
    for p in paths {
        let p = p.as_str().ok_or_else(|| {
            malformed(
                path,
                format!("weightsManifest[{g}].paths has a non-string entry"),
            )
        })?;
        if p.contains("..") || Path::new(p).is_absolute() {
            return Err(malformed(
                path,
                format!("weight shard path \"{p}\" must be a file name beside model.json"),
            ));
        }
        let bytes = read_shard(p).map_err(|(file, source)| {
            // Name the first tensor that lives (at least partly) in the missing shard.
            let begin = data.len();
            let first = parsed
                .iter()
                .find(|e| e.offset + e.nbytes > begin)
                .map(|e| e.name.clone())
                .unwrap_or_default();
            GraphModelError::Weight {
                file,
                tensor: first,
                msg: format!("weight shard is missing or unreadable: {source}"),
            }
        })?;
        let start = data.len();
        data.extend_from_slice(&bytes);
        shard_spans.push((p.to_string(), start, data.len()));
    }
    let shard_of = |pos: usize| -> String {
        shard_spans
            .iter()
            .find(|(_, s, e)| pos >= *s && pos < *e)
            .or(shard_spans.last())
            .map(|(n, _, _)| n.clone())
            .unwrap_or_else(|| "(no shard)".into())
    };
    let dir = path.parent().unwrap_or(Path::new("."));
    if data.len() < needed {
        let bad = parsed
            .iter()
            .find(|e| e.offset + e.nbytes > data.len())
            .map(|e| e.name.clone())
            .unwrap_or_default();
        let list: Vec<String> = shard_spans
            .iter()
            .map(|(n, s, e)| format!("{n}: {} bytes", e - s))
            .collect();
        return Err(GraphModelError::Weight {
            file: dir.join(shard_of(data.len().saturating_sub(1))),
            tensor: bad,
            msg: format!(
                "weight shards are too short: the manifest needs {needed} bytes, the shards hold {} ({})",
                data.len(),
                list.join(", ")
            ),
        });
    }
    if data.len() > needed {
        let last = parsed.last().map(|e| e.name.clone()).unwrap_or_default();
        return Err(GraphModelError::Weight {
            file: dir.join(shard_of(data.len().saturating_sub(1))),
            tensor: last,
            msg: format!(
                "weight shards are too long: the manifest needs {needed} bytes, the shards hold {} (wrong shard or wrong model.json?)",
                data.len()
            ),
        });
    }

    for e in parsed {
        let bytes = &data[e.offset..e.offset + e.nbytes];
        let werr = |msg: String| GraphModelError::Weight {
            file: path.to_path_buf(),
            tensor: e.name.clone(),
            msg,
        };
        let t = decode(bytes, &e.shape, e.dtype, e.quant).map_err(werr)?;
        weights.insert(e.name, t);
    }
    Ok(())
}

/// Decodes (and dequantises) one weight's bytes.
fn decode(
    bytes: &[u8],
    shape: &[usize],
    dtype: StoredDType,
    quant: Quant,
) -> Result<Tensor, String> {
    let floats: Vec<f32> = match quant {
        Quant::None => match dtype {
            StoredDType::F32 => bytes
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
            StoredDType::I32 => {
                let v: Vec<i32> = bytes
                    .chunks_exact(4)
                    .map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                    .collect();
                return Tensor::from_vec(shape, v).map_err(|e| e.to_string());
            }
            StoredDType::Bool => {
                let v: Vec<bool> = bytes.iter().map(|&b| b != 0).collect();
                return Tensor::from_vec(shape, v).map_err(|e| e.to_string());
            }
        },
        Quant::U8 { scale, min } => bytes.iter().map(|&q| q as f32 * scale + min).collect(),
        Quant::U16 { scale, min } => bytes
            .chunks_exact(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]) as f32 * scale + min)
            .collect(),
        Quant::F16 => bytes
            .chunks_exact(2)
            .map(|c| f16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
    };
    match dtype {
        StoredDType::F32 => Tensor::from_vec(shape, floats).map_err(|e| e.to_string()),
        StoredDType::I32 => {
            Tensor::from_vec(shape, floats.iter().map(|&f| f.round() as i32).collect())
                .map_err(|e| e.to_string())
        }
        StoredDType::Bool => Err("a bool weight cannot be quantised".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn model_json(weights: &str, paths: &str) -> String {
        format!(
            r#"{{"format":"graph-model","modelTopology":{{"node":[
                {{"name":"x","op":"Placeholder","attr":{{"dtype":{{"type":"DT_FLOAT"}}}}}},
                {{"name":"w","op":"Const"}},
                {{"name":"y","op":"Mul","input":["x","w","^x"]}}]}},
              "weightsManifest":[{{"paths":{paths},"weights":{weights}}}]}}"#
        )
    }

    fn reader(
        shards: Vec<(&'static str, Vec<u8>)>,
    ) -> impl Fn(&str) -> Result<Vec<u8>, (PathBuf, std::io::Error)> {
        move |name: &str| {
            shards
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, b)| b.clone())
                .ok_or_else(|| {
                    (
                        PathBuf::from(name),
                        std::io::Error::new(std::io::ErrorKind::NotFound, "not found"),
                    )
                })
        }
    }

    #[test]
    fn parses_nodes_and_dequantises() {
        let w = r#"[{"name":"w","shape":[2],"dtype":"float32","quantization":{"dtype":"uint8","scale":0.5,"min":-1.0}},
                    {"name":"h","shape":[1],"dtype":"float32","quantization":{"dtype":"float16"}},
                    {"name":"i","shape":[1],"dtype":"int32"}]"#;
        let mut bytes = vec![0u8, 4];
        bytes.extend_from_slice(&f16::from_f32(1.5).to_le_bytes());
        bytes.extend_from_slice(&7i32.to_le_bytes());
        let text = model_json(w, r#"["a.bin"]"#);
        let m = ModelFile::parse(
            Path::new("m/model.json"),
            &text,
            &reader(vec![("a.bin", bytes)]),
        )
        .unwrap();
        assert_eq!(m.nodes.len(), 3);
        assert_eq!(m.nodes[2].inputs, vec!["x", "w"]);
        assert_eq!(m.weights["w"].as_slice::<f32>().unwrap(), &[-1.0, 1.0]);
        assert_eq!(m.weights["h"].as_slice::<f32>().unwrap(), &[1.5]);
        assert_eq!(m.weights["i"].as_slice::<i32>().unwrap(), &[7]);
    }

    #[test]
    fn shard_errors_name_file_and_tensor() {
        let w = r#"[{"name":"w","shape":[2],"dtype":"float32"},{"name":"v","shape":[2],"dtype":"float32"}]"#;
        let text = model_json(w, r#"["a.bin","b.bin"]"#);
        // Missing second shard.
        let e = ModelFile::parse(
            Path::new("model.json"),
            &text,
            &reader(vec![("a.bin", vec![0; 8])]),
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("b.bin") && e.contains("\"v\"") && e.contains("missing"),
            "{e}"
        );
        // Short second shard.
        let e = ModelFile::parse(
            Path::new("model.json"),
            &text,
            &reader(vec![("a.bin", vec![0; 8]), ("b.bin", vec![0; 5])]),
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("b.bin") && e.contains("\"v\"") && e.contains("too short"),
            "{e}"
        );
        // Too long.
        let e = ModelFile::parse(
            Path::new("model.json"),
            &text,
            &reader(vec![("a.bin", vec![0; 8]), ("b.bin", vec![0; 12])]),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("too long"), "{e}");
    }

    #[test]
    fn malformed_json_and_unknown_dtypes() {
        let r = reader(vec![("a.bin", vec![0; 8])]);
        let e = ModelFile::parse(Path::new("model.json"), "{", &r)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("model.json") && e.contains("not valid JSON"),
            "{e}"
        );
        let e = ModelFile::parse(Path::new("model.json"), "{\"modelTopology\":{}}", &r)
            .unwrap_err()
            .to_string();
        assert!(e.contains("modelTopology.node"), "{e}");
        let text = model_json(
            r#"[{"name":"w","shape":[2],"dtype":"complex64"}]"#,
            r#"["a.bin"]"#,
        );
        let e = ModelFile::parse(Path::new("model.json"), &text, &r)
            .unwrap_err()
            .to_string();
        assert!(e.contains("\"w\"") && e.contains("complex64"), "{e}");
        let text = model_json(
            r#"[{"name":"w","shape":[2],"dtype":"float32","quantization":{"dtype":"int4"}}]"#,
            r#"["a.bin"]"#,
        );
        let e = ModelFile::parse(Path::new("model.json"), &text, &r)
            .unwrap_err()
            .to_string();
        assert!(e.contains("int4"), "{e}");
        let text = model_json(
            r#"[{"name":"w","shape":[-2],"dtype":"float32"}]"#,
            r#"["a.bin"]"#,
        );
        assert!(ModelFile::parse(Path::new("model.json"), &text, &r).is_err());
        let text = model_json("[]", r#"["../x.bin"]"#);
        assert!(ModelFile::parse(Path::new("model.json"), &text, &r).is_err());
    }
}
