//! Loads plugin libraries and turns their C tables into `NodeKind`s, so that the runtime
//! drives external nodes through the same `Node` trait as built-in ones.
//!
//! Order of trust: the host reads the table's stable prefix (ABI version, size) before any
//! other field, refuses another major version, and validates every string and code of the
//! declarations. The library stays loaded (an `Arc<Library>`) while any node it created or
//! tensor it produced is alive.

use std::any::Any;
use std::ffi::{c_char, c_void};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use plugin_sdk::abi::{self, *};
use plugin_sdk::{
    FrameInfo, Inputs, Node, NodeError, NodeKind, NodeSpec, Outputs, Params, PortKind, Value,
};

/// Why a library could not be used as a plugin.
#[derive(Debug, thiserror::Error)]
pub enum PluginLoadError {
    #[error("cannot load plugin library \"{path}\": {reason}")]
    Open { path: PathBuf, reason: String },
    #[error("\"{path}\" is not an engine plugin: it does not export the symbol `{symbol}`")]
    NotAPlugin { path: PathBuf, symbol: &'static str },
    #[error("plugin \"{path}\" was built for plugin ABI {major}.{minor}, but this engine speaks ABI {host_major}.{host_minor}; rebuild the plugin against this engine's plugin-sdk")]
    AbiMismatch {
        path: PathBuf,
        major: u32,
        minor: u32,
        host_major: u32,
        host_minor: u32,
    },
    #[error("plugin \"{path}\" has a malformed table: {reason}")]
    Malformed { path: PathBuf, reason: String },
    #[error("plugin \"{path}\" failed to configure itself: {reason}")]
    Configure { path: PathBuf, reason: String },
    #[error("node kind \"{kind}\" is offered by two libraries, \"{first}\" and \"{second}\"; remove one of them from the plugin path (or rename the kind in one plugin)")]
    Conflict {
        kind: String,
        first: String,
        second: String,
    },
}

impl PluginLoadError {
    /// The library at fault.
    pub fn path(&self) -> Option<&Path> {
        match self {
            PluginLoadError::Open { path, .. }
            | PluginLoadError::NotAPlugin { path, .. }
            | PluginLoadError::AbiMismatch { path, .. }
            | PluginLoadError::Malformed { path, .. }
            | PluginLoadError::Configure { path, .. } => Some(path),
            PluginLoadError::Conflict { .. } => None,
        }
    }
}

/// A loaded library and what it declares.
pub struct LoadedPlugin {
    pub path: PathBuf,
    pub name: String,
    pub version: String,
    pub abi: (u32, u32),
    pub kinds: Vec<NodeKind>,
}

struct Library {
    lib: libloading::Library,
    table: *const PluginTable,
    path: PathBuf,
    /// The table's ABI minor version: fields added after 1.0 are read only when it has them.
    minor: u32,
}

// SAFETY: the table is immutable static data of the library, which stays loaded as long as
// this struct lives; the function pointers are thread-safe by the ABI's contract.
unsafe impl Send for Library {}
unsafe impl Sync for Library {}

impl Library {
    fn table(&self) -> &PluginTable {
        // SAFETY: validated non-null at load; lives as long as `lib`.
        unsafe { &*self.table }
    }
}

/// Loads a plugin library, configures it with the host's thread budget (ABI 1.1) and reads its
/// declarations.
pub fn load(path: &Path, threads: usize) -> Result<LoadedPlugin, PluginLoadError> {
    let open_err = |reason: String| PluginLoadError::Open {
        path: path.to_path_buf(),
        reason,
    };
    if !path.exists() {
        return Err(open_err(
            "no such file (paths are relative to the current directory; build the plugin with `cargo build -p <crate>`)".into(),
        ));
    }
    // SAFETY: loading a library runs its initialisers; that is what loading a plugin means.
    let lib = unsafe { libloading::Library::new(path) }.map_err(|e| {
        let detail = std::error::Error::source(&e)
            .map(|s| s.to_string())
            .unwrap_or_default();
        open_err(if detail.is_empty() {
            e.to_string()
        } else {
            format!("{e}: {detail}")
        })
    })?;
    let table = {
        // SAFETY: the symbol's type is fixed by the ABI; we check the library's answer below.
        let entry: libloading::Symbol<EntryFn> = unsafe { lib.get(ENTRY_SYMBOL.as_bytes()) }
            .map_err(|_| PluginLoadError::NotAPlugin {
                path: path.to_path_buf(),
                symbol: ENTRY_SYMBOL,
            })?;
        unsafe { entry() }
    };
    let malformed = |reason: String| PluginLoadError::Malformed {
        path: path.to_path_buf(),
        reason,
    };
    if table.is_null() {
        return Err(malformed(format!("{ENTRY_SYMBOL}() returned null")));
    }
    // The prefix first: nothing else of the table is read before the version is known.
    let prefix = unsafe { &*(table as *const TablePrefix) };
    if prefix.abi_major != ABI_MAJOR || prefix.abi_minor > ABI_MINOR {
        return Err(PluginLoadError::AbiMismatch {
            path: path.to_path_buf(),
            major: prefix.abi_major,
            minor: prefix.abi_minor,
            host_major: ABI_MAJOR,
            host_minor: ABI_MINOR,
        });
    }
    if (prefix.struct_size as usize) < std::mem::size_of::<PluginTable>() {
        return Err(malformed(format!(
            "table size {} is smaller than ABI {ABI_MAJOR}.{ABI_MINOR}'s {}",
            prefix.struct_size,
            std::mem::size_of::<PluginTable>()
        )));
    }
    let minor = prefix.abi_minor;
    let library = Arc::new(Library {
        lib,
        table,
        path: path.to_path_buf(),
        minor,
    });
    let t = library.table();
    if let (true, Some(configure)) = (minor >= 1, t.configure) {
        let host = HostConfigC {
            struct_size: std::mem::size_of::<HostConfigC>() as u32,
            threads: threads.clamp(1, u32::MAX as usize) as u32,
        };
        let mut text = ErrorText::default();
        let sink = ErrorSinkC {
            ctx: &mut text as *mut ErrorText as *mut c_void,
            set: set_error,
        };
        // SAFETY: ABI 1.1's configure, called once, before any node of the library exists.
        let status = unsafe { configure(&host, &sink) };
        if status != STATUS_OK {
            return Err(PluginLoadError::Configure {
                path: path.to_path_buf(),
                reason: status_error(&library, status, text, "configure").to_string(),
            });
        }
    }
    let name = unsafe { read_str(t.plugin_name, "plugin name") }.map_err(malformed)?;
    let version = unsafe { read_str(t.plugin_version, "plugin version") }.map_err(malformed)?;
    let descs =
        unsafe { slice_of(t.kinds, t.n_kinds as usize, "node kinds") }.map_err(malformed)?;
    let mut specs = Vec::new();
    for d in descs {
        let can_source = minor >= 1 && t.next_frame.is_some();
        specs.push(unsafe { read_kind(d, can_source, minor) }.map_err(malformed)?);
    }
    if minor >= 1 && !t.param_ranges.is_null() {
        unsafe { read_ranges(t.param_ranges, &mut specs) }.map_err(malformed)?;
    }
    let mut kinds = Vec::new();
    for (index, spec) in specs.into_iter().enumerate() {
        let lib = library.clone();
        let kind_spec = spec.clone();
        kinds.push(NodeKind::new(spec, move |params: &Params| {
            ForeignNode::create(lib.clone(), index as u32, &kind_spec, params)
                .map(|n| Box::new(n) as Box<dyn Node>)
        }));
    }
    let _ = &library.lib;
    Ok(LoadedPlugin {
        path: path.to_path_buf(),
        name,
        version,
        abi: (prefix.abi_major, prefix.abi_minor),
        kinds,
    })
}

/// Attaches ABI 1.1's parameter ranges (an array ended by a null `param`) to the kinds.
unsafe fn read_ranges(mut p: *const ParamRangeC, specs: &mut [NodeSpec]) -> Result<(), String> {
    // A bound on the walk, so that a table without its terminator cannot run off forever.
    for _ in 0..1_000_000 {
        let r = unsafe { &*p };
        if r.param.is_null() {
            return Ok(());
        }
        let name = unsafe { read_str(r.param, "parameter range name") }?;
        let spec = specs
            .get_mut(r.kind as usize)
            .ok_or_else(|| format!("parameter range for \"{name}\" names kind index {}", r.kind))?;
        let kind = spec.kind.clone();
        let param = spec
            .params
            .iter_mut()
            .find(|q| q.name == name)
            .ok_or_else(|| {
                format!("node kind \"{kind}\": a range names unknown parameter \"{name}\"")
            })?;
        if r.min.partial_cmp(&r.max).is_none_or(|o| o.is_gt()) {
            return Err(format!(
                "node kind \"{kind}\": parameter \"{name}\" has range [{}, {}]",
                r.min, r.max
            ));
        }
        param.range = Some((r.min, r.max));
        p = p.wrapping_add(1);
    }
    Err("the parameter range array has no terminator (an entry with a null name)".into())
}

unsafe fn read_kind(d: &NodeKindDescC, can_source: bool, minor: u32) -> Result<NodeSpec, String> {
    let name = unsafe { read_str(d.name, "node kind name") }?;
    let ctx = |e: String| format!("node kind \"{name}\": {e}");
    let mut spec = NodeSpec::new(
        &name,
        &unsafe { read_opt_str(d.doc, "doc") }
            .map_err(ctx)?
            .unwrap_or_default(),
    );
    for p in unsafe { slice_of(d.inputs, d.n_inputs as usize, "inputs") }.map_err(ctx)? {
        spec.inputs.push(unsafe { read_port(p) }.map_err(ctx)?);
    }
    for p in unsafe { slice_of(d.outputs, d.n_outputs as usize, "outputs") }.map_err(ctx)? {
        spec.outputs.push(unsafe { read_port(p) }.map_err(ctx)?);
    }
    for p in unsafe { slice_of(d.params, d.n_params as usize, "params") }.map_err(ctx)? {
        spec.params
            .push(unsafe { read_param_spec(p) }.map_err(ctx)?);
    }
    if spec.is_source() && !can_source {
        return Err(ctx(if minor == 0 {
            "declares no inputs, so it is a source, and sources need plugin ABI 1.1 (this library speaks 1.0); rebuild it against this engine's plugin SDK".into()
        } else {
            "declares no inputs, so it is a source, but the table's next_frame is null".into()
        }));
    }
    Ok(spec)
}

/// Collects an error message written by the plugin.
#[derive(Default)]
struct ErrorText(String);

/// The most bytes of a plugin's error message the host keeps: a plugin may hand over a
/// 50 MB string, and only the start of it is worth printing.
const MAX_PLUGIN_MESSAGE: usize = 4096;

unsafe extern "C" fn set_error(ctx: *mut c_void, msg: *const u8, len: usize) {
    // SAFETY: `ctx` is the `ErrorText` the host passed along with this callback for the
    // duration of the call that may report an error.
    let text = unsafe { &mut *(ctx as *mut ErrorText) };
    let kept = len.min(MAX_PLUGIN_MESSAGE);
    let bytes = if msg.is_null() {
        &[][..]
    } else {
        // SAFETY: the ABI promises `msg` points to `len` readable bytes; only the first
        // `kept <= len` are read.
        unsafe { std::slice::from_raw_parts(msg, kept) }
    };
    text.0 = String::from_utf8_lossy(bytes).into_owned();
    if kept < len {
        text.0.push_str(&format!("… ({} more bytes)", len - kept));
    }
}

struct Emitted {
    outputs: Outputs,
    keep_alive: Arc<dyn Any + Send + Sync>,
    error: Option<String>,
}

unsafe extern "C" fn emit(
    ctx: *mut c_void,
    port: *const c_char,
    kind: u32,
    tensors: *const NamedTensorC,
    n_tensors: u32,
) -> i32 {
    let state = unsafe { &mut *(ctx as *mut Emitted) };
    let named = match unsafe { slice_of(tensors, n_tensors as usize, "output tensors") } {
        Ok(n) => n,
        Err(e) => {
            state.error.get_or_insert(e);
            return STATUS_ERROR;
        }
    };
    // Take ownership of every tensor first, so that none leaks whatever else is wrong.
    let imported: Vec<(Result<String, String>, Result<plugin_sdk::Tensor, String>)> = named
        .iter()
        .map(|nt| unsafe {
            (
                read_str(nt.name, "tensor name"),
                import_tensor(nt.tensor, Some(state.keep_alive.clone())),
            )
        })
        .collect();
    let port = match unsafe { read_str(port, "output port name") } {
        Ok(p) => p,
        Err(e) => {
            state.error.get_or_insert(e);
            return STATUS_ERROR;
        }
    };
    let Some(kind) = PortKind::from_u32(kind) else {
        state
            .error
            .get_or_insert(format!("output \"{port}\" has unknown kind code {kind}"));
        return STATUS_ERROR;
    };
    let mut value = Value::new(kind);
    for (name, tensor) in imported {
        match (name, tensor) {
            (Ok(n), Ok(t)) => value.insert(&n, t),
            (Err(e), _) | (_, Err(e)) => {
                state.error.get_or_insert(format!("output \"{port}\": {e}"));
                return STATUS_ERROR;
            }
        }
    }
    state.outputs.set(&port, value);
    STATUS_OK
}

/// A node living in a plugin library.
struct ForeignNode {
    lib: Arc<Library>,
    instance: *mut c_void,
    input_names: Vec<String>,
}

// SAFETY: a node instance is used by one stage thread at a time (the runtime owns it).
unsafe impl Send for ForeignNode {}

fn status_error(lib: &Library, status: i32, text: ErrorText, what: &str) -> NodeError {
    let msg = if text.0.is_empty() {
        "(no message)".to_string()
    } else {
        text.0
    };
    match status {
        STATUS_PANIC => NodeError::new(format!(
            "plugin {} panicked in {what}: {msg}",
            lib.path.display()
        )),
        STATUS_ERROR => NodeError::new(msg),
        other => NodeError::new(format!(
            "plugin {} returned unknown status {other} from {what}: {msg}",
            lib.path.display()
        )),
    }
}

/// A failed call's error, with the reason the host refused one of its outputs first: a plugin
/// that stops because `emit` failed usually reports only that it failed.
fn with_refusal(failed: NodeError, refused: Option<String>) -> NodeError {
    match refused {
        Some(reason) => NodeError::new(format!(
            "invalid output from plugin: {reason} (the plugin then stopped: {})",
            failed.message()
        )),
        None => failed,
    }
}

impl Emitted {
    fn into_outputs(self) -> Result<Outputs, NodeError> {
        match self.error {
            Some(e) => Err(NodeError::new(format!("invalid output from plugin: {e}"))),
            None => Ok(self.outputs),
        }
    }
}

impl ForeignNode {
    /// Runs one call of the library with an output sink (collecting what it emits) and an
    /// error sink (collecting its message); returns the call's status with both.
    fn call_with_sinks(
        &self,
        call: impl FnOnce(&OutputSinkC, &ErrorSinkC) -> i32,
    ) -> (i32, Emitted, ErrorText) {
        let mut emitted = Emitted {
            outputs: Outputs::new(),
            keep_alive: self.lib.clone(),
            error: None,
        };
        let mut text = ErrorText::default();
        let out = OutputSinkC {
            ctx: &mut emitted as *mut Emitted as *mut c_void,
            emit,
        };
        let err = ErrorSinkC {
            ctx: &mut text as *mut ErrorText as *mut c_void,
            set: set_error,
        };
        let status = call(&out, &err);
        (status, emitted, text)
    }

    fn create(
        lib: Arc<Library>,
        kind: u32,
        spec: &NodeSpec,
        params: &Params,
    ) -> Result<ForeignNode, NodeError> {
        let mut store = CStore::default();
        let entries: Vec<ParamEntryC> = spec
            .params
            .iter()
            .filter_map(|p| {
                params.get(&p.name).map(|v| ParamEntryC {
                    name: store.str(&p.name),
                    value: store.param_value(p.ty, v),
                })
            })
            .collect();
        let mut text = ErrorText::default();
        let sink = ErrorSinkC {
            ctx: &mut text as *mut ErrorText as *mut c_void,
            set: set_error,
        };
        let mut instance: *mut c_void = std::ptr::null_mut();
        let status = unsafe {
            (lib.table().create)(
                kind,
                entries.as_ptr(),
                entries.len() as u32,
                &mut instance,
                &sink,
            )
        };
        if status != STATUS_OK {
            return Err(status_error(&lib, status, text, "create"));
        }
        if instance.is_null() {
            return Err(NodeError::new("plugin create returned no instance"));
        }
        Ok(ForeignNode {
            lib,
            instance,
            input_names: spec.inputs.iter().map(|p| p.name.clone()).collect(),
        })
    }
}

impl Node for ForeignNode {
    fn process(&mut self, frame: &FrameInfo, inputs: &Inputs) -> Result<Outputs, NodeError> {
        let mut store = CStore::default();
        // The C arrays must not move while the call runs: build them fully first.
        let mut named: Vec<Vec<NamedTensorC>> = Vec::new();
        let mut meta = Vec::new();
        for port in &self.input_names {
            let value = inputs.get(port);
            named.push(
                value
                    .map(|v| {
                        v.tensors()
                            .iter()
                            .map(|(n, t)| NamedTensorC {
                                name: store.str(n),
                                tensor: export_tensor(t),
                            })
                            .collect()
                    })
                    .unwrap_or_default(),
            );
            // A 1.0 library does not know the kinds 1.1 added; it gets what they refine.
            let kind = value.map_or(PortKind::Any, |v| v.kind());
            let kind = match kind {
                PortKind::ModelImage if self.lib.minor == 0 => PortKind::Tensor,
                k => k,
            };
            meta.push((store.str(port), kind as u32, value.is_some()));
        }
        let ports: Vec<PortValueC> = meta
            .iter()
            .zip(&named)
            .map(|(&(port, kind, present), tensors)| PortValueC {
                port,
                present: present as u32,
                kind,
                n_tensors: tensors.len() as u32,
                tensors: tensors.as_ptr(),
            })
            .collect();
        let frame_c = FrameC {
            stream: frame.stream,
            reserved: 0,
            index: frame.index,
            timestamp_ns: frame.timestamp_ns,
            source: store.str(&frame.source),
            width: frame.width,
            height: frame.height,
        };
        // SAFETY: the instance is this library's; the frame and port arrays live through the
        // call.
        let (status, emitted, text) = self.call_with_sinks(|out, err| unsafe {
            (self.lib.table().process)(
                self.instance,
                &frame_c,
                ports.as_ptr(),
                ports.len() as u32,
                out,
                err,
            )
        });
        if status != STATUS_OK {
            let failed = status_error(&self.lib, status, text, "process");
            return Err(with_refusal(failed, emitted.error));
        }
        emitted.into_outputs()
    }

    fn next_frame(&mut self, frame: &mut FrameInfo) -> Result<Option<Outputs>, NodeError> {
        let Some(next) = self.lib.table().next_frame.filter(|_| self.lib.minor >= 1) else {
            return Err(NodeError::new("plugin has no next_frame (ABI 1.0)"));
        };
        let mut frame_c = FrameC {
            stream: frame.stream,
            reserved: 0,
            index: frame.index,
            timestamp_ns: frame.timestamp_ns,
            source: std::ptr::null(),
            width: 0,
            height: 0,
        };
        // SAFETY: the instance is this library's; the frame lives through the call.
        let (status, emitted, text) =
            self.call_with_sinks(|out, err| unsafe { next(self.instance, &mut frame_c, out, err) });
        match status {
            STATUS_OK => {}
            STATUS_END_OF_STREAM => return Ok(None),
            _ => {
                let failed = status_error(&self.lib, status, text, "next_frame");
                return Err(with_refusal(failed, emitted.error));
            }
        }
        let outputs = emitted.into_outputs()?;
        // SAFETY: the library wrote a NUL-terminated string or left it null.
        let source = unsafe { read_opt_str(frame_c.source, "frame source") }
            .map_err(|e| NodeError::new(format!("invalid frame from plugin: {e}")))?;
        frame.stream = frame_c.stream;
        frame.timestamp_ns = frame_c.timestamp_ns;
        frame.width = frame_c.width;
        frame.height = frame_c.height;
        if let Some(source) = source {
            frame.source = source.into();
        }
        Ok(Some(outputs))
    }

    fn finish(&mut self) -> Result<(), NodeError> {
        let mut text = ErrorText::default();
        let sink = ErrorSinkC {
            ctx: &mut text as *mut ErrorText as *mut c_void,
            set: set_error,
        };
        let status = unsafe { (self.lib.table().finish)(self.instance, &sink) };
        if status != STATUS_OK {
            return Err(status_error(&self.lib, status, text, "finish"));
        }
        Ok(())
    }
}

impl Drop for ForeignNode {
    fn drop(&mut self) {
        // Runs before `lib` drops: the library is still loaded.
        unsafe { (self.lib.table().destroy)(self.instance) };
    }
}

pub use abi::{ABI_MAJOR as HOST_ABI_MAJOR, ABI_MINOR as HOST_ABI_MINOR};

#[cfg(test)]
mod tests {
    use super::*;

    /// The host's reason for refusing an output comes first in the error of the call that
    /// then failed.
    #[test]
    fn a_refused_output_is_reported_with_its_reason() {
        let e = with_refusal(
            NodeError::new("emit failed"),
            Some("output \"boxes\": null data pointer for a tensor of shape [2, 4]".into()),
        );
        assert_eq!(
            e.message(),
            "invalid output from plugin: output \"boxes\": null data pointer for a tensor of shape [2, 4] (the plugin then stopped: emit failed)"
        );
        assert_eq!(with_refusal(NodeError::new("x"), None).message(), "x");
    }

    /// A 50 MB message from a plugin is kept to its first 4 KB, saying how much was cut.
    #[test]
    fn huge_plugin_messages_are_clipped() {
        let huge = vec![b'e'; 50 << 20];
        let mut text = ErrorText::default();
        // SAFETY: `text` outlives the call and `huge` holds `huge.len()` bytes.
        unsafe {
            set_error(
                &mut text as *mut ErrorText as *mut c_void,
                huge.as_ptr(),
                huge.len(),
            )
        };
        assert!(text.0.len() < MAX_PLUGIN_MESSAGE + 64, "{}", text.0.len());
        assert!(text.0.ends_with(&format!(
            "… ({} more bytes)",
            huge.len() - MAX_PLUGIN_MESSAGE
        )));
        let mut short = ErrorText::default();
        // SAFETY: as above, with 5 bytes.
        unsafe {
            set_error(
                &mut short as *mut ErrorText as *mut c_void,
                b"oops!".as_ptr(),
                5,
            )
        };
        assert_eq!(short.0, "oops!");
    }
}
