//! Model weights from files: PyTorch checkpoints (`.pth`/`.pt`, every format `torch.save`
//! writes, read without PyTorch), `.safetensors`, and Detectron2 / Detectron `.pkl`
//! checkpoints (pickles of numpy arrays, read by a restricted unpickler that runs nothing:
//! [`numpy_pickle`]), under the reference implementation's parameter names.
//!
//! A model binds its parameters with a [`Binder`]: it asks for each tensor by name and shape,
//! and [`Binder::finish`] then reports every missing, unexpected and mis-shaped tensor in one
//! error, so a wrong checkpoint is diagnosed in one go rather than one tensor at a time.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Path, PathBuf};

use half::{bf16, f16};

use crate::tensor::{DType, Tensor, TensorError};

mod numpy_pickle;

#[derive(Debug, thiserror::Error)]
pub enum WeightsError {
    #[error("cannot read weights file \"{path}\": {reason}")]
    Io { path: PathBuf, reason: String },
    #[error("\"{path}\" is not a usable weights file: {reason} (expected a PyTorch checkpoint .pth/.pt, a .safetensors file or a Detectron2 .pkl of numpy arrays)")]
    Format { path: PathBuf, reason: String },
    #[error("{0}")]
    Mismatch(Box<Mismatch>),
    #[error("cannot write weights file \"{path}\": {reason}")]
    Write { path: PathBuf, reason: String },
}

/// What did not fit when a model bound its weights.
#[derive(Debug, Default, PartialEq)]
pub struct Mismatch {
    pub path: PathBuf,
    pub prefix: String,
    /// (name, expected shape)
    pub missing: Vec<(String, Vec<usize>)>,
    /// Names in the file (under the prefix) that the model does not use.
    pub unexpected: Vec<String>,
    /// (name, expected shape, shape in the file)
    pub misshaped: Vec<(String, Vec<usize>, Vec<usize>)>,
}

const LIST_AT_MOST: usize = 12;

fn list<T>(
    f: &mut fmt::Formatter<'_>,
    title: &str,
    items: &[T],
    show: impl Fn(&T) -> String,
) -> fmt::Result {
    if items.is_empty() {
        return Ok(());
    }
    write!(f, "\n  {title} ({}):", items.len())?;
    for item in items.iter().take(LIST_AT_MOST) {
        write!(f, "\n    {}", show(item))?;
    }
    if items.len() > LIST_AT_MOST {
        write!(f, "\n    ... and {} more", items.len() - LIST_AT_MOST)?;
    }
    Ok(())
}

impl fmt::Display for Mismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "weights \"{}\"", self.path.display())?;
        if !self.prefix.is_empty() {
            write!(f, " (prefix \"{}\")", self.prefix)?;
        }
        write!(f, " do not fit the model:")?;
        list(f, "missing", &self.missing, |(n, s)| format!("{n} {s:?}"))?;
        list(f, "mis-shaped", &self.misshaped, |(n, want, got)| {
            format!("{n}: the model expects {want:?}, the file has {got:?}")
        })?;
        list(f, "unexpected", &self.unexpected, |n| n.clone())?;
        if self.missing.len() + self.misshaped.len() > self.unexpected.len() / 2
            && !self.unexpected.is_empty()
        {
            write!(f, "\n  (is this a checkpoint of another architecture or depth, or does it need a `prefix`?)")?;
        }
        Ok(())
    }
}

/// All tensors of a weights file, by name.
#[derive(Debug)]
pub struct Weights {
    path: PathBuf,
    tensors: BTreeMap<String, Tensor>,
}

fn bytes_to<T: Copy>(bytes: &[u8], size: usize, conv: impl Fn(&[u8]) -> T) -> Vec<T> {
    bytes.chunks_exact(size).map(conv).collect()
}

/// Converts little-endian bytes of a file dtype into a tensor: floats become f32 (the dtype
/// the CPU layers compute in), integers i64, bytes and bools stay as they are.
fn tensor_from_le(kind: FileDType, shape: &[usize], b: &[u8]) -> Result<Tensor, String> {
    use FileDType as F;
    let t = match kind {
        F::F32 => Tensor::from_vec(
            shape,
            bytes_to(b, 4, |c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])),
        ),
        F::F64 => Tensor::from_vec(
            shape,
            bytes_to(b, 8, |c| {
                f64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]) as f32
            }),
        ),
        F::F16 => Tensor::from_vec(
            shape,
            bytes_to(b, 2, |c| f16::from_le_bytes([c[0], c[1]]).to_f32()),
        ),
        F::BF16 => Tensor::from_vec(
            shape,
            bytes_to(b, 2, |c| bf16::from_le_bytes([c[0], c[1]]).to_f32()),
        ),
        F::I64 => Tensor::from_vec(
            shape,
            bytes_to(b, 8, |c| {
                i64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]])
            }),
        ),
        F::I32 => Tensor::from_vec(
            shape,
            bytes_to(b, 4, |c| {
                i32::from_le_bytes([c[0], c[1], c[2], c[3]]) as i64
            }),
        ),
        F::I16 => Tensor::from_vec(
            shape,
            bytes_to(b, 2, |c| i16::from_le_bytes([c[0], c[1]]) as i64),
        ),
        F::I8 => Tensor::from_vec(shape, bytes_to(b, 1, |c| c[0] as i8 as i64)),
        F::U8 => Tensor::from_vec(shape, b.to_vec()),
        F::Bool => Tensor::from_vec(shape, b.iter().map(|&x| x != 0).collect::<Vec<bool>>()),
        F::Other(name) => return Err(format!("unsupported dtype {name}")),
    };
    t.map_err(|e| e.to_string())
}

#[derive(Clone, Copy, Debug)]
enum FileDType {
    F64,
    F32,
    F16,
    BF16,
    I64,
    I32,
    I16,
    I8,
    U8,
    Bool,
    Other(&'static str),
}

impl FileDType {
    fn size(self) -> usize {
        match self {
            FileDType::F64 | FileDType::I64 => 8,
            FileDType::F32 | FileDType::I32 => 4,
            FileDType::F16 | FileDType::BF16 | FileDType::I16 => 2,
            _ => 1,
        }
    }
}

fn checked_bytes(
    name: &str,
    kind: FileDType,
    shape: &[usize],
    bytes: &[u8],
) -> Result<Tensor, String> {
    let want = shape
        .iter()
        .try_fold(kind.size(), |acc, &d| acc.checked_mul(d))
        .ok_or_else(|| format!("tensor \"{name}\" {shape:?} is too large"))?;
    if bytes.len() != want {
        return Err(format!(
            "tensor \"{name}\" {shape:?} should hold {want} bytes but has {}",
            bytes.len()
        ));
    }
    tensor_from_le(kind, shape, bytes).map_err(|e| format!("tensor \"{name}\": {e}"))
}

/// A checkpoint's ZIP may inflate to at most this many times its size on disk (and
/// [`MIN_INFLATION_LIMIT`] in any case). `torch.save` stores its entries uncompressed, so a
/// real checkpoint inflates to about its own size; a ZIP bomb (1 MB of deflated zeros) to
/// thousands of times it.
pub const MAX_INFLATION: u64 = 64;
/// Archives inflating to less than this are never refused.
pub const MIN_INFLATION_LIMIT: u64 = 16 << 20;

/// Refuses a ZIP whose entries declare more than the inflation limit, before anything is
/// inflated (from the archive's central directory).
fn check_inflation(path: &Path, len: u64) -> Result<(), String> {
    let file = std::fs::File::open(path).map_err(|e| e.to_string())?;
    let mut archive = zip::ZipArchive::new(std::io::BufReader::new(file))
        .map_err(|e| format!("not a readable ZIP archive: {e}"))?;
    let mut total = 0u64;
    for i in 0..archive.len() {
        let entry = archive
            .by_index_raw(i)
            .map_err(|e| format!("ZIP entry {i}: {e}"))?;
        total = total.saturating_add(entry.size());
    }
    let limit = len.saturating_mul(MAX_INFLATION).max(MIN_INFLATION_LIMIT);
    if total > limit {
        return Err(format!(
            "the archive would inflate to {total} bytes, {}x its {len} bytes on disk (the limit is {MAX_INFLATION}x, or {MIN_INFLATION_LIMIT} bytes for small files): refused as a likely ZIP bomb; torch.save writes checkpoints uncompressed",
            total / len.max(1)
        ));
    }
    Ok(())
}

/// Training checkpoints nest the weights under a key (`{"state_dict": ..., "epoch": 3}`,
/// Detectron2's `{"model": ..., "__author__": ...}`, Detectron's `{"blobs": ...}`); the readers
/// flatten that to "state_dict.conv.weight". Such a key is stripped when every tensor is under
/// it, so that names are the module's own.
const NESTING_KEYS: [&str; 5] = [
    "state_dict.",
    "model.",
    "model_state_dict.",
    "net.",
    "blobs.",
];

fn nesting_key<'n>(names: impl Iterator<Item = &'n str> + Clone) -> Option<&'static str> {
    NESTING_KEYS
        .into_iter()
        .find(|k| names.clone().all(|n| n.starts_with(k)))
}

impl Weights {
    /// Reads a weights file. The format is recognised from its first bytes, and for pickles
    /// from the name too: a safetensors file starts with the length of its JSON header and
    /// that header (`{`); a ZIP archive (or a `.tar`) is a PyTorch checkpoint. A pickle (first
    /// byte 0x80) is either a legacy `torch.save` checkpoint or a Detectron2-style pickle of
    /// numpy arrays: a `.pkl` file is read as numpy arrays (and as a PyTorch checkpoint only
    /// if it turns out to be `torch.save`'s), any other name as a PyTorch checkpoint first and
    /// as numpy arrays when that fails, so that a corrupt `.pth` keeps pytorch-reader's
    /// diagnosis. Only regular files are read (a FIFO or a device is refused, see
    /// [`crate::files`]).
    pub fn load(path: &Path) -> Result<Weights, WeightsError> {
        let io_err = |e: std::io::Error| WeightsError::Io {
            path: path.to_path_buf(),
            reason: e.to_string(),
        };
        let format_err = |reason: String| WeightsError::Format {
            path: path.to_path_buf(),
            reason,
        };
        let len = crate::files::regular_file_len(path).map_err(io_err)?;
        let head = {
            use std::io::Read;
            let mut head = Vec::with_capacity(9);
            std::fs::File::open(path)
                .map_err(io_err)?
                .take(9)
                .read_to_end(&mut head)
                .map_err(io_err)?;
            head
        };
        // The safetensors test comes first: its 8-byte header length may start with any
        // byte, 0x80 (a pickle's first byte) or "PK" (a ZIP's) included.
        let is_safetensors = head.len() == 9
            && head[8] == b'{'
            && u64::from_le_bytes(head[..8].try_into().unwrap_or_default())
                .checked_add(8)
                .is_some_and(|end| end <= len);
        let is_zip = head.starts_with(b"PK");
        let is_pickle = head.first() == Some(&0x80);
        let is_tar = path.extension().is_some_and(|e| e == "tar");
        let is_pkl = path
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("pkl"));
        let tensors = if is_safetensors {
            let bytes = crate::files::read_regular(path).map_err(io_err)?;
            Self::read_safetensors(&bytes).map_err(format_err)?
        } else if is_zip {
            check_inflation(path, len).map_err(format_err)?;
            Self::read_pytorch(path).map_err(format_err)?
        } else if is_tar {
            Self::read_pytorch(path).map_err(format_err)?
        } else if is_pkl {
            let bytes = crate::files::read_regular(path).map_err(io_err)?;
            match numpy_pickle::read_arrays(&bytes) {
                Ok(arrays) => Self::numpy_tensors(arrays).map_err(format_err)?,
                // torch.save's legacy container under a .pkl name.
                Err(e) if e.is_torch() => Self::read_pytorch(path).map_err(format_err)?,
                Err(e) => return Err(format_err(e.to_string())),
            }
        } else if is_pickle {
            match Self::read_pytorch(path) {
                Ok(tensors) => tensors,
                Err(torch) => {
                    // pytorch-reader keeps numpy arrays as opaque objects ("holds no
                    // tensors"): a pickle of numpy arrays under another name than .pkl.
                    let bytes = crate::files::read_regular(path).map_err(io_err)?;
                    match numpy_pickle::read_arrays(&bytes) {
                        Ok(arrays) => Self::numpy_tensors(arrays).map_err(format_err)?,
                        // The pickle names numpy (or something that must never be run): its
                        // problem is better told by the numpy reader.
                        Err(e)
                            if e.numpy_seen
                                || (matches!(e.error, numpy_pickle::PickleError::RefusedGlobal { .. })
                                    && !e.is_torch()) =>
                        {
                            return Err(format_err(format!(
                                "{e} (read as a pickle of numpy arrays; as a PyTorch checkpoint: {torch})"
                            )))
                        }
                        Err(_) => return Err(format_err(torch)),
                    }
                }
            }
        } else {
            let bytes = crate::files::read_regular(path).map_err(io_err)?;
            Self::read_safetensors(&bytes).map_err(format_err)?
        };
        Ok(Weights {
            path: path.to_path_buf(),
            tensors,
        })
    }

    fn read_pytorch(path: &Path) -> Result<BTreeMap<String, Tensor>, String> {
        use pytorch_reader::DType as P;
        let reader = pytorch_reader::PytorchReader::new(path).map_err(|e| e.to_string())?;
        if reader.is_empty() {
            return Err("the checkpoint holds no tensors".into());
        }
        let nest = nesting_key(reader.tensors().keys().map(String::as_str));
        let mut out = BTreeMap::new();
        for (name, t) in reader.tensors() {
            let kind = match t.dtype() {
                P::F64 => FileDType::F64,
                P::F32 => FileDType::F32,
                P::F16 => FileDType::F16,
                P::BF16 => FileDType::BF16,
                P::I64 => FileDType::I64,
                P::I32 => FileDType::I32,
                P::I16 => FileDType::I16,
                P::I8 => FileDType::I8,
                P::U8 => FileDType::U8,
                P::Bool => FileDType::Bool,
                P::U64 => FileDType::Other("u64"),
                P::U32 => FileDType::Other("u32"),
                P::U16 => FileDType::Other("u16"),
            };
            let bytes = t.read().map_err(|e| format!("tensor \"{name}\": {e}"))?;
            let short = nest.and_then(|k| name.strip_prefix(k)).unwrap_or(name);
            out.insert(
                short.to_string(),
                checked_bytes(name, kind, t.shape(), &bytes)?,
            );
        }
        Ok(out)
    }

    /// The arrays of a pickle of numpy arrays, as tensors (floats as f32, integers as i64).
    fn numpy_tensors(
        arrays: Vec<numpy_pickle::NumpyArray<'_>>,
    ) -> Result<BTreeMap<String, Tensor>, String> {
        use numpy_pickle::Dtype as N;
        let nest = nesting_key(arrays.iter().map(|a| a.name.as_str()));
        let mut out = BTreeMap::new();
        for a in arrays {
            let kind = match a.dtype {
                N::F64 => FileDType::F64,
                N::F32 => FileDType::F32,
                N::F16 => FileDType::F16,
                N::I64 => FileDType::I64,
                N::I32 => FileDType::I32,
                N::I16 => FileDType::I16,
                N::I8 => FileDType::I8,
                N::U8 => FileDType::U8,
                N::Bool => FileDType::Bool,
            };
            let tensor = checked_bytes(&a.name, kind, &a.shape, &a.data)?;
            let short = nest.and_then(|k| a.name.strip_prefix(k)).unwrap_or(&a.name);
            out.insert(short.to_string(), tensor);
        }
        Ok(out)
    }

    fn read_safetensors(bytes: &[u8]) -> Result<BTreeMap<String, Tensor>, String> {
        use safetensors::Dtype as S;
        let st = safetensors::SafeTensors::deserialize(bytes)
            .map_err(|e| format!("not a safetensors file: {e}"))?;
        let mut out = BTreeMap::new();
        for (name, view) in st.tensors() {
            let kind = match view.dtype() {
                S::F64 => FileDType::F64,
                S::F32 => FileDType::F32,
                S::F16 => FileDType::F16,
                S::BF16 => FileDType::BF16,
                S::I64 => FileDType::I64,
                S::I32 => FileDType::I32,
                S::I16 => FileDType::I16,
                S::I8 => FileDType::I8,
                S::U8 => FileDType::U8,
                S::BOOL => FileDType::Bool,
                _ => FileDType::Other("an unsupported safetensors dtype"),
            };
            out.insert(
                name.clone(),
                checked_bytes(&name, kind, view.shape(), view.data())?,
            );
        }
        Ok(out)
    }

    /// Weights from tensors already in memory (tests, converters).
    pub fn from_tensors(
        path: &Path,
        tensors: impl IntoIterator<Item = (String, Tensor)>,
    ) -> Weights {
        Weights {
            path: path.to_path_buf(),
            tensors: tensors.into_iter().collect(),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.tensors.keys().map(String::as_str)
    }

    pub fn get(&self, name: &str) -> Option<&Tensor> {
        self.tensors.get(name)
    }

    pub fn len(&self) -> usize {
        self.tensors.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tensors.is_empty()
    }

    /// A binder over the tensors whose names start with `prefix` (e.g. "backbone.body.").
    pub fn binder(&self, prefix: &str) -> Binder<'_> {
        Binder {
            weights: self,
            prefix: prefix.to_string(),
            taken: BTreeSet::new(),
            ignored: Vec::new(),
            other_modules: Vec::new(),
            unbound_modules_are_others: false,
            mismatch: Mismatch::default(),
        }
    }
}

/// Hands out a model's parameters by name and shape and records what did not fit.
pub struct Binder<'w> {
    weights: &'w Weights,
    prefix: String,
    taken: BTreeSet<String>,
    ignored: Vec<String>,
    other_modules: Vec<String>,
    unbound_modules_are_others: bool,
    mismatch: Mismatch,
}

impl Binder<'_> {
    /// The f32 tensor `prefix + name` with `shape`. When it is missing, mis-shaped or not a
    /// float, the problem is recorded and zeros are returned so that binding can go on and
    /// report everything; [`Binder::finish`] then fails.
    pub fn take(&mut self, name: &str, shape: &[usize]) -> Tensor {
        let full = format!("{}{name}", self.prefix);
        let zeros = || {
            Tensor::from_vec(shape, vec![0f32; shape.iter().product()])
                .unwrap_or_else(|_| Tensor::scalar(0f32))
        };
        match self.weights.get(&full) {
            None => {
                self.mismatch.missing.push((full, shape.to_vec()));
                zeros()
            }
            Some(t) => {
                self.taken.insert(full.clone());
                if t.shape() != shape {
                    self.mismatch
                        .misshaped
                        .push((full, shape.to_vec(), t.shape().to_vec()));
                    zeros()
                } else if t.dtype() != DType::F32 {
                    self.mismatch.misshaped.push((
                        format!("{full} (dtype {}, expected a float)", t.dtype()),
                        shape.to_vec(),
                        t.shape().to_vec(),
                    ));
                    zeros()
                } else {
                    t.clone()
                }
            }
        }
    }

    /// Names under the prefix that the model deliberately does not use (matched as a suffix,
    /// e.g. "num_batches_tracked").
    pub fn ignore(&mut self, suffix: &str) {
        self.ignored.push(suffix.to_string());
    }

    /// Names under the prefix that belong to another module, which another node binds
    /// (matched at the start of the name after the prefix, e.g. "mask_head." under
    /// "roi_heads."): not reported as unexpected.
    pub fn ignore_module(&mut self, module_prefix: &str) {
        self.other_modules.push(module_prefix.to_string());
    }

    /// Top-level modules under the prefix (the first component of a name after it) of which
    /// no tensor was bound belong to other nodes that share the file, e.g. CenterNet's heads
    /// beside the ResNet body at the top level of its checkpoint. A module this binder bound
    /// part of is still checked tensor by tensor.
    pub fn ignore_unbound_modules(&mut self) {
        self.unbound_modules_are_others = true;
    }

    /// Succeeds when every tensor was found with the right shape and every tensor under the
    /// prefix was used (or ignored).
    pub fn finish(mut self) -> Result<(), WeightsError> {
        let module_of = |name: &str| -> String {
            let rest = &name[self.prefix.len().min(name.len())..];
            rest.split('.').next().unwrap_or("").to_string()
        };
        let bound: BTreeSet<String> = self.taken.iter().map(|n| module_of(n)).collect();
        let unbound_ok = self.unbound_modules_are_others;
        self.mismatch.unexpected = self
            .weights
            .names()
            .filter(|n| n.starts_with(&self.prefix) && !self.taken.contains(*n))
            .filter(|n| !self.ignored.iter().any(|s| n.ends_with(s.as_str())))
            .filter(|n| {
                let rest = &n[self.prefix.len()..];
                !self
                    .other_modules
                    .iter()
                    .any(|m| rest.starts_with(m.as_str()))
            })
            .filter(|n| !unbound_ok || bound.contains(&module_of(n)))
            .map(str::to_string)
            .collect();
        let m = self.mismatch;
        if m.missing.is_empty() && m.misshaped.is_empty() && m.unexpected.is_empty() {
            Ok(())
        } else {
            Err(WeightsError::Mismatch(Box::new(Mismatch {
                path: self.weights.path.clone(),
                prefix: self.prefix,
                ..m
            })))
        }
    }
}

/// Writes f32 tensors as a `.safetensors` file (what [`Weights::load`] reads back), e.g. to
/// turn generated or converted weights into a file a pipeline's `weights` parameter names.
pub fn save_safetensors(path: &Path, tensors: &[(String, Tensor)]) -> Result<(), WeightsError> {
    let fail = |reason: String| WeightsError::Write {
        path: path.to_path_buf(),
        reason,
    };
    let mut bytes: Vec<(String, Vec<usize>, Vec<u8>)> = Vec::with_capacity(tensors.len());
    for (name, t) in tensors {
        let data = t
            .as_slice::<f32>()
            .map_err(|e| fail(format!("tensor {name}: {e}")))?;
        bytes.push((
            name.clone(),
            t.shape().to_vec(),
            data.iter().flat_map(|v| v.to_le_bytes()).collect(),
        ));
    }
    let views = bytes
        .iter()
        .map(|(n, shape, b)| {
            safetensors::tensor::TensorView::new(safetensors::Dtype::F32, shape.clone(), b)
                .map(|v| (n.clone(), v))
        })
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| fail(e.to_string()))?;
    safetensors::serialize_to_file(views, None, path).map_err(|e| fail(e.to_string()))
}

/// A reproducible stand-in for a trained tensor, generated from its name alone, so that tests
/// and benchmarks can use full-size models without shipping their weights: element `i` of
/// tensor `name` is `(u_i·2 - 1)·a + b` in f32, with `u_i = (splitmix64(FNV-1a-64(name) +
/// (i + 1)·0x9E3779B97F4A7C15) >> 40) / 2^24`. `tests/reference/make_maskrcnn_fixtures.py`
/// (`generate`) computes the same values bit for bit, so a reference implementation and the
/// engine can run on identical weights.
pub fn generated_tensor(
    name: &str,
    shape: &[usize],
    a: f32,
    b: f32,
) -> Result<Tensor, TensorError> {
    let mut seed: u64 = 0xCBF2_9CE4_8422_2325;
    for byte in name.bytes() {
        seed ^= u64::from(byte);
        seed = seed.wrapping_mul(0x0000_0100_0000_01B3);
    }
    let n: usize = shape.iter().product();
    let data = (0..n as u64)
        .map(|i| {
            let mut z = seed.wrapping_add((i + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15));
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^= z >> 31;
            let u = (z >> 40) as f32 / (1u32 << 24) as f32;
            (u * 2.0 - 1.0) * a + b
        })
        .collect();
    Tensor::from_vec(shape, data)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_tensors_match_the_python_generator_and_round_trip() {
        // tests/reference/make_maskrcnn_fixtures.py: generate("backbone.body.conv1.weight", [4], 0.5, 0.25)
        let t = generated_tensor("backbone.body.conv1.weight", &[2, 2], 0.5, 0.25).unwrap();
        let want = [0.226_363_6_f32, -0.066_147_33, 0.170_794_79, 0.679_527_9];
        assert_eq!(t.as_slice::<f32>().unwrap(), &want);
        let dir = std::env::temp_dir().join(format!("weights-gen-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("g.safetensors");
        save_safetensors(&path, &[("a.weight".to_string(), t.clone())]).unwrap();
        let w = Weights::load(&path).unwrap();
        assert_eq!(w.get("a.weight").unwrap().as_slice::<f32>().unwrap(), &want);
        assert_eq!(w.get("a.weight").unwrap().shape(), &[2, 2]);
        let ints = Tensor::from_vec(&[1], vec![1i64]).unwrap();
        let err = save_safetensors(&path, &[("i".to_string(), ints)]).unwrap_err();
        assert!(
            err.to_string().contains("cannot write weights file"),
            "{err}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    fn fixture(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/weights")
            .join(name)
    }

    /// tests/reference/make_weight_fixtures.py saves the same small state dict with
    /// torch.save (zip), torch.save(_use_new_zipfile_serialization=False) (legacy pickle),
    /// nested under "state_dict", and as safetensors.
    #[test]
    fn reads_every_container_with_the_same_values() {
        for file in [
            "tiny.pth",
            "tiny_legacy.pth",
            "tiny_nested.pth",
            "tiny.safetensors",
        ] {
            let w = Weights::load(&fixture(file)).unwrap_or_else(|e| panic!("{file}: {e}"));
            let conv = w
                .get("conv.weight")
                .unwrap_or_else(|| panic!("{file}: {:?}", w.names().collect::<Vec<_>>()));
            assert_eq!(conv.shape(), &[2, 3, 1, 1], "{file}");
            let v = conv.as_slice::<f32>().unwrap();
            assert_eq!(v, &[0.0, 0.5, 1.0, 1.5, 2.0, 2.5], "{file}");
            let half = w.get("half").unwrap();
            assert_eq!(
                half.as_slice::<f32>().unwrap(),
                &[0.25, -2.0],
                "{file}: f16 widened to f32"
            );
            let steps = w.get("bn.num_batches_tracked").unwrap();
            assert_eq!(steps.as_slice::<i64>().unwrap(), &[7], "{file}");
            // A transposed (non-contiguous) tensor is saved in its logical order.
            let t = w.get("transposed").unwrap();
            assert_eq!(t.shape(), &[3, 2]);
            assert_eq!(
                t.as_slice::<f32>().unwrap(),
                &[0.0, 3.0, 1.0, 4.0, 2.0, 5.0],
                "{file}"
            );
        }
    }

    /// A tensor's dtype, shape and values, comparable across files.
    fn contents(t: &Tensor) -> (DType, Vec<usize>, String) {
        let values = match t.dtype() {
            DType::F32 => format!("{:?}", t.as_slice::<f32>().unwrap()),
            DType::I64 => format!("{:?}", t.as_slice::<i64>().unwrap()),
            DType::U8 => format!("{:?}", t.as_slice::<u8>().unwrap()),
            DType::Bool => format!("{:?}", t.as_slice::<bool>().unwrap()),
            other => panic!("unexpected dtype {other}"),
        };
        (t.dtype(), t.shape().to_vec(), values)
    }

    /// torch.save ends every archive with zip64 records (76 bytes) before the classic end
    /// record; with a 21-character file stem the first central directory header is 76 bytes
    /// too, and zip 9.1-9.4 then start the directory at the second header and refuse the file
    /// (a CenterNet checkpoint saved as `ctdet_dla34_generated.pth` hit it). The file must
    /// load with tiny.pth's tensors.
    #[test]
    fn reads_torch_archives_whose_first_header_is_as_long_as_the_zip64_records() {
        let reference = Weights::load(&fixture("tiny.pth")).unwrap();
        let w = Weights::load(&fixture("zip64_eocd_coincident.pth")).unwrap();
        let names: Vec<&str> = w.names().collect();
        assert_eq!(names, reference.names().collect::<Vec<_>>());
        for n in names {
            let (a, b) = (w.get(n).unwrap(), reference.get(n).unwrap());
            assert_eq!((a.shape(), a.dtype()), (b.shape(), b.dtype()), "{n}");
            assert_eq!(a.describe(), b.describe(), "{n}");
        }
        let conv = w.get("conv.weight").unwrap().as_slice::<f32>().unwrap();
        assert_eq!(conv, [0.0, 0.5, 1.0, 1.5, 2.0, 2.5]);
    }

    /// tests/reference/make_weight_fixtures.py pickles tiny.pth's state dict as numpy arrays:
    /// Detectron2's {"model": ..., "__author__": ..., "matching_heuristics": True} at pickle
    /// protocols 2, 4 and 5 (with one array of each other dtype, big-endian and Fortran-ordered
    /// ones among them), Detectron's {"blobs": ...}, a flat dict (protocol 3), and a Python 2
    /// pickle made by hand (SHORT_BINSTRING/BINSTRING data and keys). Every name and value
    /// matches tiny.pth.
    #[test]
    fn reads_detectron2_pkl_checkpoints_with_the_values_of_tiny_pth() {
        let reference = Weights::load(&fixture("tiny.pth")).unwrap();
        let tiny: Vec<&str> = reference.names().collect();
        let extra = [
            ("extra.f64", "[1.5, -0.25, 3.0]", &[3usize][..]),
            ("extra.i32", "[-2, 70000]", &[2]),
            ("extra.i16", "[-300, 5]", &[2]),
            ("extra.i8", "[-7, 100]", &[2]),
            ("extra.u8", "[0, 7, 255]", &[3]),
            ("extra.mask", "[true, false, true]", &[3]),
            ("extra.big_endian_i64", "[-2, 1099511627776]", &[2]),
            (
                "extra.big_endian_fortran",
                "[0.0, 0.5, 1.0, 1.5, 2.0, 2.5]",
                &[2, 3],
            ),
        ];
        for file in [
            "tiny_d2_p2.pkl",
            "tiny_d2_p4.pkl",
            "tiny_d2_p5.pkl",
            "tiny_blobs.pkl",
            "tiny_flat.pkl",
            "tiny_py2.pkl",
        ] {
            let w = Weights::load(&fixture(file)).unwrap_or_else(|e| panic!("{file}: {e}"));
            for name in &tiny {
                let got = w.get(name).unwrap_or_else(|| {
                    panic!("{file}: no {name} in {:?}", w.names().collect::<Vec<_>>())
                });
                assert_eq!(
                    contents(got),
                    contents(reference.get(name).unwrap()),
                    "{file}: {name}"
                );
            }
            let mut want: Vec<&str> = tiny.clone();
            if file.starts_with("tiny_d2") {
                want.extend(extra.iter().map(|(n, _, _)| *n));
                for (name, values, shape) in extra {
                    let t = w.get(name).unwrap();
                    assert_eq!(t.shape(), shape, "{file}: {name}");
                    assert_eq!(contents(t).2, values, "{file}: {name}");
                }
                assert_eq!(w.get("extra.i32").unwrap().dtype(), DType::I64);
                assert_eq!(w.get("extra.u8").unwrap().dtype(), DType::U8);
            }
            want.sort_unstable();
            // Strings, bools and numpy scalars ("__author__", "iteration") are skipped.
            assert_eq!(w.names().collect::<Vec<_>>(), want, "{file}");
        }
    }

    /// A pickle calling os.system is refused, naming the global, and nothing runs: under a
    /// .pkl name and under a .pth name (where pytorch-reader reads it first).
    #[test]
    fn hostile_pickles_are_refused_naming_the_global() {
        let ran = Path::new("/tmp/kernels-hostile-pkl-ran");
        let _ = std::fs::remove_file(ran);
        let e = Weights::load(&fixture("hostile.pkl")).unwrap_err();
        assert!(matches!(e, WeightsError::Format { .. }), "{e}");
        let e = e.to_string();
        assert!(
            e.contains("hostile.pkl")
                && e.contains("refused global os.system (at offset 38): a .pkl checkpoint may only hold numpy arrays"),
            "{e}"
        );
        let dir = std::env::temp_dir().join(format!("weights-hostile-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let as_pth = dir.join("hostile.pth");
        std::fs::copy(fixture("hostile.pkl"), &as_pth).unwrap();
        let e = Weights::load(&as_pth).unwrap_err().to_string();
        assert!(e.contains("refused global os.system"), "{e}");
        assert!(!ran.exists(), "the hostile pickle ran its command");
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// Detection by name and content: a numpy pickle named .pth and a legacy torch.save file
    /// named .pkl both load; a corrupt .pth keeps pytorch-reader's message and a corrupt numpy
    /// pickle the numpy reader's, whatever its name.
    #[test]
    fn pickles_are_told_apart_by_name_and_content() {
        let dir = std::env::temp_dir().join(format!("weights-pkl-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let numpy_pth = dir.join("d2.pth");
        std::fs::copy(fixture("tiny_d2_p2.pkl"), &numpy_pth).unwrap();
        assert_eq!(Weights::load(&numpy_pth).unwrap().len(), 12);
        let legacy_pkl = dir.join("legacy.pkl");
        std::fs::copy(fixture("tiny_legacy.pth"), &legacy_pkl).unwrap();
        let w = Weights::load(&legacy_pkl).unwrap();
        assert_eq!(
            w.get("half").unwrap().as_slice::<f32>().unwrap(),
            &[0.25, -2.0]
        );

        let legacy = std::fs::read(fixture("tiny_legacy.pth")).unwrap();
        let cut = dir.join("cut.pth");
        std::fs::write(&cut, &legacy[..legacy.len() - 40]).unwrap();
        let direct = Weights::read_pytorch(&cut).unwrap_err();
        let e = Weights::load(&cut).unwrap_err().to_string();
        assert!(
            e.contains(&direct) && !e.contains("read as a pickle of numpy arrays"),
            "{e}"
        );

        let d2 = std::fs::read(fixture("tiny_d2_p4.pkl")).unwrap();
        for name in ["cut.pkl", "cut_d2.pth"] {
            let cut = dir.join(name);
            std::fs::write(&cut, &d2[..d2.len() - 20]).unwrap();
            let e = Weights::load(&cut).unwrap_err().to_string();
            assert!(
                e.contains(name) && e.contains("before its STOP opcode (a truncated file?)"),
                "{e}"
            );
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn binder_lists_missing_unexpected_and_misshaped_tensors() {
        let w = Weights::load(&fixture("tiny.pth")).unwrap();
        let mut b = w.binder("");
        let _ = b.take("conv.weight", &[2, 3, 3, 3]);
        let _ = b.take("conv.bias", &[2]);
        b.ignore("num_batches_tracked");
        let err = b.finish().unwrap_err().to_string();
        assert!(err.contains("missing (1):\n    conv.bias [2]"), "{err}");
        assert!(
            err.contains("conv.weight: the model expects [2, 3, 3, 3], the file has [2, 3, 1, 1]"),
            "{err}"
        );
        assert!(
            err.contains("unexpected (2):\n    half\n    transposed"),
            "{err}"
        );

        let mut b = w.binder("");
        let conv = b.take("conv.weight", &[2, 3, 1, 1]);
        let _ = b.take("half", &[2]);
        let _ = b.take("transposed", &[3, 2]);
        b.ignore("num_batches_tracked");
        b.finish().unwrap();
        assert_eq!(conv.as_slice::<f32>().unwrap()[5], 2.5);

        // Modules of which nothing was bound can be another node's; a partly bound module
        // is still checked.
        let mut b = w.binder("");
        let _ = b.take("conv.weight", &[2, 3, 1, 1]);
        b.ignore("num_batches_tracked");
        b.ignore_unbound_modules();
        b.finish().unwrap();
        let mut b = w.binder("");
        let _ = b.take("half", &[2]);
        b.ignore_unbound_modules();
        b.finish().unwrap();
        // Without it, the same binding reports the other modules' tensors.
        let mut b = w.binder("");
        let _ = b.take("half", &[2]);
        let err = b.finish().unwrap_err().to_string();
        assert!(
            err.contains("transposed") && err.contains("conv.weight"),
            "{err}"
        );
    }

    #[test]
    fn wrong_and_truncated_files_are_errors() {
        let dir = std::env::temp_dir().join(format!("weights-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let text = dir.join("notes.pth");
        std::fs::write(&text, "hello, I am not a checkpoint").unwrap();
        assert!(matches!(
            Weights::load(&text),
            Err(WeightsError::Format { .. })
        ));
        let full = std::fs::read(fixture("tiny.pth")).unwrap();
        let cut = dir.join("cut.pth");
        std::fs::write(&cut, &full[..full.len() / 2]).unwrap();
        let err = Weights::load(&cut).unwrap_err();
        assert!(matches!(err, WeightsError::Format { .. }), "{err}");
        let st = std::fs::read(fixture("tiny.safetensors")).unwrap();
        let cut = dir.join("cut.safetensors");
        std::fs::write(&cut, &st[..st.len() - 3]).unwrap();
        assert!(Weights::load(&cut)
            .unwrap_err()
            .to_string()
            .contains("not a safetensors file"));
        assert!(matches!(
            Weights::load(&dir.join("absent.pth")),
            Err(WeightsError::Io { .. })
        ));
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A safetensors file whose header length starts with 0x80 (a pickle's first byte) or
    /// "PK" (a ZIP's) is still read as safetensors; special files are refused by name.
    #[test]
    fn safetensors_detection_does_not_depend_on_the_header_length() {
        let dir = std::env::temp_dir();
        for (len, what) in [(0x80usize, "pickle"), (0x4b50, "zip")] {
            let json = br#"{"t":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}"#;
            let mut header = json.to_vec();
            header.resize(len, b' ');
            let mut bytes = (len as u64).to_le_bytes().to_vec();
            bytes.extend_from_slice(&header);
            bytes.extend_from_slice(&1.5f32.to_le_bytes());
            let path = dir.join(format!("weights-{what}-{}.safetensors", std::process::id()));
            std::fs::write(&path, &bytes).unwrap();
            let w = Weights::load(&path).unwrap_or_else(|e| panic!("{what}-like header: {e}"));
            assert_eq!(w.get("t").unwrap().as_slice::<f32>().unwrap(), &[1.5]);
            let _ = std::fs::remove_file(&path);
        }
        #[cfg(unix)]
        {
            let e = Weights::load(Path::new("/dev/zero"))
                .unwrap_err()
                .to_string();
            assert!(
                e.contains("/dev/zero") && e.contains("a character device"),
                "{e}"
            );
        }
    }

    /// A small ZIP that inflates a thousandfold is refused from its directory, before it is
    /// inflated; the message names the file and the limit.
    #[test]
    fn zip_bombs_are_refused_before_inflating() {
        use std::io::Write;
        let path = std::env::temp_dir().join(format!("bomb-{}.pth", std::process::id()));
        {
            let mut z = zip::ZipWriter::new(std::fs::File::create(&path).unwrap());
            let opts = zip::write::SimpleFileOptions::default()
                .compression_method(zip::CompressionMethod::Deflated);
            z.start_file("archive/data/0", opts).unwrap();
            let zeros = vec![0u8; 1 << 20];
            for _ in 0..40 {
                z.write_all(&zeros).unwrap();
            }
            z.finish().unwrap();
        }
        let on_disk = std::fs::metadata(&path).unwrap().len();
        assert!(on_disk < 1 << 20, "{on_disk} bytes");
        let e = Weights::load(&path).unwrap_err().to_string();
        assert!(
            e.contains("bomb")
                && e.contains("41943040 bytes")
                && e.contains(path.to_str().unwrap()),
            "{e}"
        );
        let _ = std::fs::remove_file(&path);
    }

    /// A bounded mutation run over the committed checkpoints (every container format, the .pkl
    /// pickles of numpy arrays and the hostile one included): flipped,
    /// inserted and deleted bytes and truncations must give a clean error or a load, never a
    /// panic. A failing input is written out for reproduction.
    #[test]
    fn mutated_checkpoints_never_panic() {
        let mut state = 0x9E37_79B9_7F4A_7C15u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let dir = std::env::temp_dir().join(format!("weights-mutate-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut runs = 0;
        for name in [
            "tiny.pth",
            "tiny_legacy.pth",
            "tiny_nested.pth",
            "tiny.safetensors",
            "tiny_d2_p2.pkl",
            "tiny_d2_p4.pkl",
            "tiny_d2_p5.pkl",
            "tiny_blobs.pkl",
            "tiny_flat.pkl",
            "tiny_py2.pkl",
            "hostile.pkl",
        ] {
            let seed = std::fs::read(fixture(name)).unwrap();
            for i in 0..400 {
                let mut b = seed.clone();
                for _ in 0..1 + next() % 4 {
                    let at = (next() as usize) % b.len().max(1);
                    match next() % 4 {
                        0 if !b.is_empty() => b[at] ^= 1 << (next() % 8),
                        1 => b.insert(at.min(b.len()), next() as u8),
                        2 if !b.is_empty() => {
                            b.remove(at);
                        }
                        _ => b.truncate(at),
                    }
                }
                let path = dir.join(format!("{i}-{name}"));
                std::fs::write(&path, &b).unwrap();
                let outcome = std::panic::catch_unwind(|| Weights::load(&path).map(|w| w.len()));
                assert!(
                    outcome.is_ok(),
                    "Weights::load panicked on a mutation of {name}, kept at {}",
                    path.display()
                );
                std::fs::remove_file(&path).unwrap();
                runs += 1;
            }
        }
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(runs, 4400);
    }
}
