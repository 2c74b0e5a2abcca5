//! The C ABI between the engine and plugin libraries (version 1.1).
//!
//! A plugin library exports one symbol, [`ENTRY_SYMBOL`], a function returning a pointer to a
//! static [`PluginTable`]. The table starts with a stable prefix (`abi_major`, `abi_minor`,
//! `struct_size`) that the host reads before anything else, then the plugin's name, version,
//! node kinds (ports and parameter schemas) and function pointers. Only C types cross: strings
//! are NUL-terminated UTF-8, tensors are DLPack `DLManagedTensorVersioned`. Ownership of every
//! tensor passed across the boundary moves to the receiver, who calls its `deleter` when done;
//! so values cross without copies in both directions.
//!
//! Version 1.1 adds two function pointers in slots that 1.0 reserved (null there), so a 1.0
//! table has the same size and still loads: `configure` (the host's thread budget, called once
//! after loading) and `next_frame` (node kinds without inputs, i.e. sources, can live in a
//! library). The host reads them only from tables that declare minor version 1 or later.
//!
//! `include/engine_plugin.h` is the same ABI for C and C++ authors. Rust authors never touch
//! this module directly: they implement [`crate::Node`] and call [`crate::export_plugin!`].

use std::any::Any;
use std::ffi::{c_char, c_void, CStr, CString};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;

use engine_tensor::{DType, Tensor};

use crate::node::{FrameInfo, Inputs, NodeError, NodeKind, PortSpec};
use crate::params::{ParamSpec, ParamType, ParamValue, Params};
use crate::value::{PortKind, Value};

/// Major version: a library with another major version is refused.
pub const ABI_MAJOR: u32 = 1;
/// Minor version: the host accepts libraries with a minor version up to its own.
pub const ABI_MINOR: u32 = 1;
/// The symbol every plugin library exports.
pub const ENTRY_SYMBOL: &str = "engine_plugin_entry";

/// Status codes returned by the table's functions.
pub const STATUS_OK: i32 = 0;
/// `next_frame` only: the source has no more frames (nothing was emitted).
pub const STATUS_END_OF_STREAM: i32 = 1;
pub const STATUS_ERROR: i32 = 2;
pub const STATUS_PANIC: i32 = 3;

// ---------------------------------------------------------------------------------------
// DLPack (v1.1 layout, `DLManagedTensorVersioned`)
// ---------------------------------------------------------------------------------------

pub const DLPACK_MAJOR: u32 = 1;
pub const DLPACK_MINOR: u32 = 1;
pub const DL_CPU: i32 = 1;
pub const DL_INT: u8 = 0;
pub const DL_UINT: u8 = 1;
pub const DL_FLOAT: u8 = 2;
pub const DL_BOOL: u8 = 6;
pub const DLPACK_FLAG_READ_ONLY: u64 = 1;

#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct DLDevice {
    pub device_type: i32,
    pub device_id: i32,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DLDataType {
    pub code: u8,
    pub bits: u8,
    pub lanes: u16,
}

#[repr(C)]
pub struct DLTensor {
    pub data: *mut c_void,
    pub device: DLDevice,
    pub ndim: i32,
    pub dtype: DLDataType,
    pub shape: *mut i64,
    pub strides: *mut i64,
    pub byte_offset: u64,
}

#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct DLPackVersion {
    pub major: u32,
    pub minor: u32,
}

#[repr(C)]
pub struct DLManagedTensorVersioned {
    pub version: DLPackVersion,
    pub manager_ctx: *mut c_void,
    pub deleter: Option<unsafe extern "C" fn(*mut DLManagedTensorVersioned)>,
    pub flags: u64,
    pub dl_tensor: DLTensor,
}

pub fn dl_dtype(dtype: DType) -> DLDataType {
    let (code, bits) = match dtype {
        DType::F32 => (DL_FLOAT, 32),
        DType::F16 => (DL_FLOAT, 16),
        DType::U8 => (DL_UINT, 8),
        DType::I32 => (DL_INT, 32),
        DType::I64 => (DL_INT, 64),
        DType::Bool => (DL_BOOL, 8),
    };
    DLDataType {
        code,
        bits,
        lanes: 1,
    }
}

pub fn from_dl_dtype(t: DLDataType) -> Option<DType> {
    if t.lanes != 1 {
        return None;
    }
    DType::ALL.into_iter().find(|d| dl_dtype(*d) == t)
}

struct ExportCtx {
    _tensor: Tensor,
    shape: Vec<i64>,
    strides: Vec<i64>,
}

unsafe extern "C" fn delete_exported(managed: *mut DLManagedTensorVersioned) {
    if managed.is_null() {
        return;
    }
    // SAFETY: `managed` and its context were made by `export_tensor` with `Box::into_raw`,
    // and DLPack calls the deleter exactly once.
    let managed = unsafe { Box::from_raw(managed) };
    drop(unsafe { Box::from_raw(managed.manager_ctx as *mut ExportCtx) });
}

/// Hands a tensor out as DLPack without copying: the returned struct keeps a clone of the
/// tensor (so its storage lives) until the receiver calls its deleter.
pub fn export_tensor(tensor: &Tensor) -> *mut DLManagedTensorVersioned {
    let shape: Vec<i64> = tensor.shape().iter().map(|&d| d as i64).collect();
    let mut strides = vec![1i64; shape.len()];
    for i in (0..shape.len().saturating_sub(1)).rev() {
        strides[i] = strides[i + 1] * shape[i + 1].max(1);
    }
    let mut ctx = Box::new(ExportCtx {
        _tensor: tensor.clone(),
        shape,
        strides,
    });
    let dl_tensor = DLTensor {
        data: tensor.data_ptr() as *mut c_void,
        device: DLDevice {
            device_type: DL_CPU,
            device_id: 0,
        },
        ndim: ctx.shape.len() as i32,
        dtype: dl_dtype(tensor.dtype()),
        shape: ctx.shape.as_mut_ptr(),
        strides: ctx.strides.as_mut_ptr(),
        byte_offset: 0,
    };
    Box::into_raw(Box::new(DLManagedTensorVersioned {
        version: DLPackVersion {
            major: DLPACK_MAJOR,
            minor: DLPACK_MINOR,
        },
        manager_ctx: Box::into_raw(ctx) as *mut c_void,
        deleter: Some(delete_exported),
        flags: DLPACK_FLAG_READ_ONLY,
        dl_tensor,
    }))
}

struct SendPtr(*mut DLManagedTensorVersioned);
// SAFETY: DLPack tensors may be released from any thread; the pointer is only used to call
// the deleter once.
unsafe impl Send for SendPtr {}
unsafe impl Sync for SendPtr {}

/// The most dimensions a tensor crossing the ABI may have.
pub const MAX_NDIM: i32 = 8;

/// Takes ownership of a DLPack tensor and wraps it without copying. The deleter runs when the
/// last clone of the returned tensor drops (or at once, on error). `keep_alive` is held as
/// long as the tensor (the library whose code the deleter is).
///
/// # Safety
/// `managed` must be null or a valid `DLManagedTensorVersioned` whose ownership is handed to
/// this function. Every pointer and size is checked before it is read (ndim at most
/// [`MAX_NDIM`], a shape whose byte size fits the address space, data when there are
/// elements); a plugin whose own code crashes can still kill the process.
pub unsafe fn import_tensor(
    managed: *mut DLManagedTensorVersioned,
    keep_alive: Option<Arc<dyn Any + Send + Sync>>,
) -> Result<Tensor, String> {
    if managed.is_null() {
        return Err("tensor pointer is null".into());
    }
    let owner = SendPtr(managed);
    let release = move || {
        let owner = owner;
        // SAFETY: valid until the deleter runs, which happens only here.
        unsafe {
            if let Some(deleter) = (*owner.0).deleter {
                deleter(owner.0);
            }
        }
        drop(keep_alive);
    };
    let m = unsafe { &*managed };
    let t = &m.dl_tensor;
    let fail = |msg: String, release: Box<dyn FnOnce() + Send + Sync>| {
        release();
        Err(msg)
    };
    if m.version.major != DLPACK_MAJOR {
        return fail(
            format!(
                "DLPack version {}.{} is not supported (expected {}.x)",
                m.version.major, m.version.minor, DLPACK_MAJOR
            ),
            Box::new(release),
        );
    }
    if t.device.device_type != DL_CPU {
        return fail(
            format!(
                "tensor is on DLPack device type {}; only CPU tensors (type 1) cross the ABI in this version",
                t.device.device_type
            ),
            Box::new(release),
        );
    }
    let Some(dtype) = from_dl_dtype(t.dtype) else {
        return fail(
            format!(
                "unsupported DLPack dtype (code {}, bits {}, lanes {})",
                t.dtype.code, t.dtype.bits, t.dtype.lanes
            ),
            Box::new(release),
        );
    };
    if t.ndim < 0 || (t.ndim > 0 && t.shape.is_null()) {
        return fail(
            format!("invalid DLPack shape (ndim {})", t.ndim),
            Box::new(release),
        );
    }
    if t.ndim > MAX_NDIM {
        return fail(
            format!("ndim {} exceeds the limit of {MAX_NDIM} dimensions", t.ndim),
            Box::new(release),
        );
    }
    let dims: &[i64] = if t.ndim == 0 {
        &[]
    } else {
        unsafe { std::slice::from_raw_parts(t.shape, t.ndim as usize) }
    };
    if let Some(d) = dims.iter().find(|&&d| d < 0) {
        return fail(
            format!("negative dimension {d} in {dims:?}"),
            Box::new(release),
        );
    }
    let shape: Vec<usize> = dims.iter().map(|&d| d as usize).collect();
    // The byte size must be addressable, and data must exist when there is any.
    let bytes = shape
        .iter()
        .try_fold(1usize, |n, &d| n.checked_mul(d))
        .and_then(|n| n.checked_mul(dtype.size()))
        .filter(|&b| b <= isize::MAX as usize);
    match bytes {
        None => {
            return fail(
                format!("shape {dims:?} of {dtype} overflows the address space"),
                Box::new(release),
            )
        }
        Some(b) if b > 0 && t.data.is_null() => {
            return fail(
                format!("null data pointer for a tensor of shape {dims:?}"),
                Box::new(release),
            )
        }
        Some(_) => {}
    }
    // A tensor without elements has no layout to check (its strides may be anything, and
    // their products may overflow).
    let empty = bytes == Some(0);
    if !t.strides.is_null() && t.ndim > 0 && !empty {
        let strides = unsafe { std::slice::from_raw_parts(t.strides, t.ndim as usize) };
        let mut expect = 1i64;
        for i in (0..dims.len()).rev() {
            if dims[i] > 1 && strides[i] != expect {
                return fail(
                    format!(
                        "tensor with shape {dims:?} has strides {strides:?}; only compact row-major tensors cross the ABI"
                    ),
                    Box::new(release),
                );
            }
            // The byte size fits the address space, so this product does too.
            expect = expect.saturating_mul(dims[i].max(1));
        }
    }
    let data = (t.data as *const u8).wrapping_add(t.byte_offset as usize);
    unsafe { Tensor::from_foreign(dtype, &shape, data, Box::new(release)) }
        .map_err(|e| e.to_string())
}

// ---------------------------------------------------------------------------------------
// The plugin table
// ---------------------------------------------------------------------------------------

/// A parameter value as it crosses the ABI. `ty` is a [`ParamType`] code; the field that
/// goes with it holds the value (`ints`/`floats`/`strs` with `len` for lists).
#[repr(C)]
pub struct ParamValueC {
    pub ty: u32,
    pub boolean: u32,
    pub int: i64,
    pub float: f64,
    pub str_: *const c_char,
    pub ints: *const i64,
    pub floats: *const f64,
    pub strs: *const *const c_char,
    pub len: usize,
}

#[repr(C)]
pub struct ParamEntryC {
    pub name: *const c_char,
    pub value: ParamValueC,
}

#[repr(C)]
pub struct PortDescC {
    pub name: *const c_char,
    pub doc: *const c_char,
    /// A [`PortKind`] code.
    pub kind: u32,
    /// 0: any dtype; otherwise 1 + the index of the dtype in f32, f16, u8, i32, i64, bool.
    pub dtype: u32,
    /// Symbolic shape such as "N,4", or null.
    pub shape: *const c_char,
    pub required: u32,
}

#[repr(C)]
pub struct ParamDescC {
    pub name: *const c_char,
    pub doc: *const c_char,
    pub ty: u32,
    pub has_default: u32,
    pub default_value: ParamValueC,
}

#[repr(C)]
pub struct NodeKindDescC {
    pub name: *const c_char,
    pub doc: *const c_char,
    pub n_inputs: u32,
    pub inputs: *const PortDescC,
    pub n_outputs: u32,
    pub outputs: *const PortDescC,
    pub n_params: u32,
    pub params: *const ParamDescC,
}

/// ABI 1.1: the range of one numeric parameter (`ParamSpec::range`). The table's
/// `param_ranges` array ends with an entry whose `param` is null.
#[repr(C)]
pub struct ParamRangeC {
    /// Index of the node kind in the table's `kinds`.
    pub kind: u32,
    pub reserved: u32,
    /// The parameter's name; null ends the array.
    pub param: *const c_char,
    pub min: f64,
    pub max: f64,
}

/// What the host tells a library once, through `configure` (ABI 1.1).
#[repr(C)]
pub struct HostConfigC {
    /// `size_of::<HostConfigC>()` as the host saw it: later minor versions append fields.
    pub struct_size: u32,
    /// The thread budget: how many threads the library's compute pool may use.
    pub threads: u32,
}

/// A frame's metadata. In `next_frame` the host sets `stream`, `index` and a wall-clock
/// `timestamp_ns`, and the source fills in the rest (it may replace `timestamp_ns`, and it
/// changes `stream` to begin a new stream, for which the host then assigns a fresh id);
/// `source` then points to a string the library owns, valid until the call returns (the
/// host copies it).
#[repr(C)]
pub struct FrameC {
    pub stream: u32,
    pub reserved: u32,
    pub index: u64,
    pub timestamp_ns: u64,
    pub source: *const c_char,
    pub width: u32,
    pub height: u32,
}

#[repr(C)]
pub struct NamedTensorC {
    pub name: *const c_char,
    pub tensor: *mut DLManagedTensorVersioned,
}

/// The value of one input port for one frame. The callee owns the tensors.
#[repr(C)]
pub struct PortValueC {
    pub port: *const c_char,
    pub present: u32,
    pub kind: u32,
    pub n_tensors: u32,
    pub tensors: *const NamedTensorC,
}

/// Where a plugin writes an error message (UTF-8, not NUL-terminated).
#[repr(C)]
pub struct ErrorSinkC {
    pub ctx: *mut c_void,
    pub set: unsafe extern "C" fn(ctx: *mut c_void, msg: *const u8, len: usize),
}

/// Where a plugin emits one output port's value. The host takes ownership of every tensor,
/// also when it returns an error status.
#[repr(C)]
pub struct OutputSinkC {
    pub ctx: *mut c_void,
    pub emit: unsafe extern "C" fn(
        ctx: *mut c_void,
        port: *const c_char,
        kind: u32,
        tensors: *const NamedTensorC,
        n_tensors: u32,
    ) -> i32,
}

pub type CreateFnC = unsafe extern "C" fn(
    kind: u32,
    params: *const ParamEntryC,
    n_params: u32,
    instance: *mut *mut c_void,
    err: *const ErrorSinkC,
) -> i32;
pub type ProcessFnC = unsafe extern "C" fn(
    instance: *mut c_void,
    frame: *const FrameC,
    inputs: *const PortValueC,
    n_inputs: u32,
    out: *const OutputSinkC,
    err: *const ErrorSinkC,
) -> i32;
pub type FinishFnC = unsafe extern "C" fn(instance: *mut c_void, err: *const ErrorSinkC) -> i32;
pub type DestroyFnC = unsafe extern "C" fn(instance: *mut c_void);
/// ABI 1.1: called once after loading, before any `create`.
pub type ConfigureFnC =
    unsafe extern "C" fn(host: *const HostConfigC, err: *const ErrorSinkC) -> i32;
/// ABI 1.1: a source's next frame. Emits the outputs through `out` and returns `STATUS_OK`,
/// or returns `STATUS_END_OF_STREAM` (emitting nothing) after the last frame.
pub type NextFrameFnC = unsafe extern "C" fn(
    instance: *mut c_void,
    frame: *mut FrameC,
    out: *const OutputSinkC,
    err: *const ErrorSinkC,
) -> i32;

/// The table a plugin library exports. The first three fields are the stable prefix.
#[repr(C)]
pub struct PluginTable {
    pub abi_major: u32,
    pub abi_minor: u32,
    /// `size_of::<PluginTable>()` as the plugin saw it.
    pub struct_size: u32,
    pub reserved0: u32,
    pub plugin_name: *const c_char,
    pub plugin_version: *const c_char,
    pub n_kinds: u32,
    pub kinds: *const NodeKindDescC,
    pub create: CreateFnC,
    pub process: ProcessFnC,
    pub finish: FinishFnC,
    pub destroy: DestroyFnC,
    /// ABI 1.1 (a reserved, null slot in 1.0): may be null.
    pub configure: Option<ConfigureFnC>,
    /// ABI 1.1 (a reserved, null slot in 1.0): needed when a kind declares no inputs.
    pub next_frame: Option<NextFrameFnC>,
    /// ABI 1.1 (a reserved, null slot in 1.0): the declared parameter ranges, or null.
    pub param_ranges: *const ParamRangeC,
    pub reserved: [*const c_void; 1],
}

/// The stable prefix, read before anything else of a table.
#[repr(C)]
pub struct TablePrefix {
    pub abi_major: u32,
    pub abi_minor: u32,
    pub struct_size: u32,
}

pub type EntryFn = unsafe extern "C" fn() -> *const PluginTable;

/// A port's dtype as the ABI codes it: 0 for any dtype, else [`DType::abi_code`].
pub fn dtype_code(dtype: Option<DType>) -> u32 {
    dtype.map_or(0, DType::abi_code)
}

pub fn dtype_from_code(code: u32) -> Result<Option<DType>, String> {
    match code {
        0 => Ok(None),
        n => DType::from_abi_code(n)
            .map(Some)
            .ok_or_else(|| format!("unknown dtype code {n}")),
    }
}

/// Reads a NUL-terminated UTF-8 string (`what` names it in the error).
///
/// # Safety
/// `p` must be null or point to a NUL-terminated string.
pub unsafe fn read_str(p: *const c_char, what: &str) -> Result<String, String> {
    if p.is_null() {
        return Err(format!("{what} is null"));
    }
    unsafe { CStr::from_ptr(p) }
        .to_str()
        .map(str::to_owned)
        .map_err(|_| format!("{what} is not valid UTF-8"))
}

/// Reads an optional string (null gives `None`).
///
/// # Safety
/// As [`read_str`].
pub unsafe fn read_opt_str(p: *const c_char, what: &str) -> Result<Option<String>, String> {
    if p.is_null() {
        Ok(None)
    } else {
        unsafe { read_str(p, what) }.map(Some)
    }
}

/// # Safety
/// `p` must be null with `n == 0`, or point to `n` elements.
pub unsafe fn slice_of<'a, T>(p: *const T, n: usize, what: &str) -> Result<&'a [T], String> {
    if n == 0 {
        Ok(&[])
    } else if p.is_null() {
        Err(format!("{what} is null but its length is {n}"))
    } else {
        Ok(unsafe { std::slice::from_raw_parts(p, n) })
    }
}

/// Keeps the C strings and arrays behind `ParamValueC`/`PortDescC` alive.
#[derive(Default)]
pub struct CStore {
    strings: Vec<CString>,
    ints: Vec<Vec<i64>>,
    floats: Vec<Vec<f64>>,
    ptrs: Vec<Vec<*const c_char>>,
}

impl CStore {
    /// A C string that lives as long as the store (interior NULs are dropped).
    pub fn str(&mut self, s: &str) -> *const c_char {
        let c = CString::new(s.replace('\0', "")).unwrap_or_default();
        let p = c.as_ptr();
        self.strings.push(c);
        p
    }

    pub fn opt_str(&mut self, s: Option<&str>) -> *const c_char {
        s.map_or(std::ptr::null(), |s| self.str(s))
    }

    pub fn param_value(&mut self, ty: ParamType, v: &ParamValue) -> ParamValueC {
        let mut c = ParamValueC {
            ty: ty as u32,
            boolean: 0,
            int: 0,
            float: 0.0,
            str_: std::ptr::null(),
            ints: std::ptr::null(),
            floats: std::ptr::null(),
            strs: std::ptr::null(),
            len: 0,
        };
        match v {
            ParamValue::Bool(b) => c.boolean = *b as u32,
            ParamValue::Int(i) => c.int = *i,
            ParamValue::Float(f) => c.float = *f,
            ParamValue::Str(s) => c.str_ = self.str(s),
            ParamValue::IntList(l) => {
                c.len = l.len();
                self.ints.push(l.clone());
                c.ints = self.ints.last().map_or(std::ptr::null(), |v| v.as_ptr());
            }
            ParamValue::FloatList(l) => {
                self.floats.push(l.clone());
                c.floats = self.floats.last().map_or(std::ptr::null(), |v| v.as_ptr());
                c.len = l.len();
            }
            ParamValue::StrList(l) => {
                let ptrs: Vec<*const c_char> = l.iter().map(|s| self.str(s)).collect();
                c.len = ptrs.len();
                self.ptrs.push(ptrs);
                c.strs = self.ptrs.last().map_or(std::ptr::null(), |v| v.as_ptr());
            }
        }
        c
    }
}

/// Reads a parameter value of the declared type.
///
/// # Safety
/// The pointers inside `c` must be valid as described on [`ParamValueC`].
pub unsafe fn read_param_value(c: &ParamValueC, what: &str) -> Result<ParamValue, String> {
    let ty =
        ParamType::from_u32(c.ty).ok_or_else(|| format!("{what}: unknown type code {}", c.ty))?;
    Ok(match ty {
        ParamType::Bool => ParamValue::Bool(c.boolean != 0),
        ParamType::Int => ParamValue::Int(c.int),
        ParamType::Float => ParamValue::Float(c.float),
        ParamType::Str | ParamType::Path => ParamValue::Str(unsafe { read_str(c.str_, what) }?),
        ParamType::IntList => {
            ParamValue::IntList(unsafe { slice_of(c.ints, c.len, what) }?.to_vec())
        }
        ParamType::FloatList => {
            ParamValue::FloatList(unsafe { slice_of(c.floats, c.len, what) }?.to_vec())
        }
        ParamType::StrList => {
            let ptrs = unsafe { slice_of(c.strs, c.len, what) }?;
            ParamValue::StrList(
                ptrs.iter()
                    .map(|&p| unsafe { read_str(p, what) })
                    .collect::<Result<_, _>>()?,
            )
        }
    })
}

/// Reads a port declaration.
///
/// # Safety
/// The strings must be valid as described on [`PortDescC`].
pub unsafe fn read_port(p: &PortDescC) -> Result<PortSpec, String> {
    let name = unsafe { read_str(p.name, "port name") }?;
    let kind = PortKind::from_u32(p.kind)
        .ok_or_else(|| format!("port \"{name}\": unknown kind code {}", p.kind))?;
    Ok(PortSpec {
        dtype: dtype_from_code(p.dtype).map_err(|e| format!("port \"{name}\": {e}"))?,
        shape: unsafe { read_opt_str(p.shape, "port shape") }?,
        doc: unsafe { read_opt_str(p.doc, "port doc") }?.unwrap_or_default(),
        required: p.required != 0,
        kind,
        name,
    })
}

/// Reads a parameter declaration.
///
/// # Safety
/// The pointers must be valid as described on [`ParamDescC`].
pub unsafe fn read_param_spec(p: &ParamDescC) -> Result<ParamSpec, String> {
    let name = unsafe { read_str(p.name, "parameter name") }?;
    let ty = ParamType::from_u32(p.ty)
        .ok_or_else(|| format!("parameter \"{name}\": unknown type code {}", p.ty))?;
    let default = if p.has_default != 0 {
        let v = unsafe { read_param_value(&p.default_value, &format!("default of \"{name}\"")) }?;
        Some(
            v.coerce(ty)
                .ok_or_else(|| format!("parameter \"{name}\": default does not fit type {ty}"))?,
        )
    } else {
        None
    };
    Ok(ParamSpec {
        doc: unsafe { read_opt_str(p.doc, "parameter doc") }?.unwrap_or_default(),
        name,
        ty,
        default,
        range: None,
    })
}

/// Text of a panic payload.
pub fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "panic with a non-string payload".to_string()
    }
}

// ---------------------------------------------------------------------------------------
// The plugin side: what `export_plugin!` expands to
// ---------------------------------------------------------------------------------------

/// Plugin-side implementation of the table. Used through [`crate::export_plugin!`].
pub mod export {
    use super::*;
    use crate::node::{HostConfig, Node, Outputs};
    use std::sync::OnceLock;

    struct Exported {
        table: PluginTable,
        kinds: Vec<NodeKind>,
        on_load: Option<fn(&HostConfig)>,
        _descs: Vec<NodeKindDescC>,
        _ports: Vec<Vec<PortDescC>>,
        _params: Vec<Vec<ParamDescC>>,
        _ranges: Vec<ParamRangeC>,
        _store: CStore,
    }

    // SAFETY: everything behind the raw pointers is owned by this struct, immutable after
    // construction and lives in a static for the life of the library.
    unsafe impl Send for Exported {}
    unsafe impl Sync for Exported {}

    static EXPORTED: OnceLock<Exported> = OnceLock::new();

    fn port_desc(store: &mut CStore, p: &PortSpec) -> PortDescC {
        PortDescC {
            name: store.str(&p.name),
            doc: store.str(&p.doc),
            kind: p.kind as u32,
            dtype: dtype_code(p.dtype),
            shape: store.opt_str(p.shape.as_deref()),
            required: p.required as u32,
        }
    }

    fn build(
        name: &str,
        version: &str,
        kinds: Vec<NodeKind>,
        on_load: Option<fn(&HostConfig)>,
    ) -> Exported {
        let mut store = CStore::default();
        let mut ports_in = Vec::new();
        let mut ports_out = Vec::new();
        let mut params = Vec::new();
        for k in &kinds {
            ports_in.push(
                k.spec
                    .inputs
                    .iter()
                    .map(|p| port_desc(&mut store, p))
                    .collect::<Vec<_>>(),
            );
            ports_out.push(
                k.spec
                    .outputs
                    .iter()
                    .map(|p| port_desc(&mut store, p))
                    .collect::<Vec<_>>(),
            );
            params.push(
                k.spec
                    .params
                    .iter()
                    .map(|p| {
                        let zero = ParamValue::Bool(false);
                        let default_value =
                            store.param_value(p.ty, p.default.as_ref().unwrap_or(&zero));
                        ParamDescC {
                            name: store.str(&p.name),
                            doc: store.str(&p.doc),
                            ty: p.ty as u32,
                            has_default: p.default.is_some() as u32,
                            default_value,
                        }
                    })
                    .collect::<Vec<_>>(),
            );
        }
        let descs: Vec<NodeKindDescC> = kinds
            .iter()
            .enumerate()
            .map(|(i, k)| NodeKindDescC {
                name: store.str(&k.spec.kind),
                doc: store.str(&k.spec.doc),
                n_inputs: ports_in[i].len() as u32,
                inputs: ports_in[i].as_ptr(),
                n_outputs: ports_out[i].len() as u32,
                outputs: ports_out[i].as_ptr(),
                n_params: params[i].len() as u32,
                params: params[i].as_ptr(),
            })
            .collect();
        let mut ranges: Vec<ParamRangeC> = kinds
            .iter()
            .enumerate()
            .flat_map(|(i, k)| {
                k.spec
                    .params
                    .iter()
                    .filter_map(move |p| p.range.map(|r| (i, &p.name, r)))
            })
            .map(|(i, name, (min, max))| ParamRangeC {
                kind: i as u32,
                reserved: 0,
                param: store.str(name),
                min,
                max,
            })
            .collect();
        ranges.push(ParamRangeC {
            kind: 0,
            reserved: 0,
            param: std::ptr::null(),
            min: 0.0,
            max: 0.0,
        });
        let table = PluginTable {
            abi_major: ABI_MAJOR,
            abi_minor: ABI_MINOR,
            struct_size: std::mem::size_of::<PluginTable>() as u32,
            reserved0: 0,
            plugin_name: store.str(name),
            plugin_version: store.str(version),
            n_kinds: descs.len() as u32,
            kinds: descs.as_ptr(),
            create,
            process,
            finish,
            destroy,
            configure: Some(configure),
            next_frame: Some(next_frame),
            param_ranges: ranges.as_ptr(),
            reserved: [std::ptr::null(); 1],
        };
        Exported {
            table,
            kinds,
            on_load,
            _descs: descs,
            _ports: ports_in.into_iter().chain(ports_out).collect(),
            _params: params,
            _ranges: ranges,
            _store: store,
        }
    }

    /// How this library runs a node's work: set once by the library (a family library runs
    /// it on its compute pool, see `kernels::process::in_pool`), else on the calling thread.
    static NODE_RUNNER: std::sync::OnceLock<fn(&mut (dyn FnMut() + Send))> =
        std::sync::OnceLock::new();

    /// Sets how this library runs its nodes' `process` (once; later calls are ignored). The
    /// runner must call `work` exactly once before it returns.
    pub fn set_node_runner(run: fn(&mut (dyn FnMut() + Send))) {
        let _ = NODE_RUNNER.set(run);
    }

    fn run_node(work: &mut (dyn FnMut() + Send)) {
        match NODE_RUNNER.get() {
            Some(run) => run(work),
            None => work(),
        }
    }

    /// Builds the table once and returns it. Called by the symbol `export_plugin!` defines.
    pub fn table(
        name: &str,
        version: &str,
        kinds: fn() -> Vec<NodeKind>,
        on_load: Option<fn(&HostConfig)>,
    ) -> *const PluginTable {
        &EXPORTED
            .get_or_init(|| build(name, version, kinds(), on_load))
            .table
    }

    unsafe fn report(err: *const ErrorSinkC, msg: &str) {
        if let Some(sink) = unsafe { err.as_ref() } {
            unsafe { (sink.set)(sink.ctx, msg.as_ptr(), msg.len()) };
        }
    }

    /// Runs `f`, turning errors and panics into status codes: a panic never unwinds into the
    /// host.
    unsafe fn guarded(err: *const ErrorSinkC, f: impl FnOnce() -> Result<(), NodeError>) -> i32 {
        match catch_unwind(AssertUnwindSafe(f)) {
            Ok(Ok(())) => STATUS_OK,
            Ok(Err(e)) => {
                unsafe { report(err, e.message()) };
                STATUS_ERROR
            }
            Err(payload) => {
                unsafe { report(err, &panic_message(payload.as_ref())) };
                STATUS_PANIC
            }
        }
    }

    unsafe extern "C" fn create(
        kind: u32,
        params: *const ParamEntryC,
        n_params: u32,
        instance: *mut *mut c_void,
        err: *const ErrorSinkC,
    ) -> i32 {
        unsafe {
            guarded(err, || {
                let exported = EXPORTED.get().ok_or("plugin table was not initialised")?;
                let kind = exported
                    .kinds
                    .get(kind as usize)
                    .ok_or_else(|| format!("no node kind with index {kind}"))?;
                let mut resolved = Params::new();
                for e in slice_of(params, n_params as usize, "parameters")? {
                    let name = read_str(e.name, "parameter name")?;
                    let value = read_param_value(&e.value, &name)?;
                    resolved.set(&name, value);
                }
                if instance.is_null() {
                    return Err("instance out-pointer is null".into());
                }
                let node: Box<dyn Node> = (kind.create)(&resolved)?;
                *instance = Box::into_raw(Box::new(node)) as *mut c_void;
                Ok(())
            })
        }
    }

    unsafe extern "C" fn process(
        instance: *mut c_void,
        frame: *const FrameC,
        inputs: *const PortValueC,
        n_inputs: u32,
        out: *const OutputSinkC,
        err: *const ErrorSinkC,
    ) -> i32 {
        unsafe {
            guarded(err, || {
                // Import every input first, so that all of them are owned (and released)
                // whatever happens next.
                let ports = slice_of(inputs, n_inputs as usize, "inputs")?;
                let mut values = Inputs::new();
                let mut first_error = None;
                for p in ports {
                    let port = read_str(p.port, "input port name")?;
                    let named = slice_of(p.tensors, p.n_tensors as usize, "input tensors")?;
                    let mut value = PortKind::from_u32(p.kind).map(Value::new);
                    for nt in named {
                        let tensor = import_tensor(nt.tensor, None);
                        let name = read_str(nt.name, "tensor name");
                        match (tensor, name, value.as_mut()) {
                            (Ok(t), Ok(n), Some(v)) => v.insert(&n, t),
                            (Err(e), _, _) | (_, Err(e), _) => {
                                first_error.get_or_insert(format!("input \"{port}\": {e}"));
                            }
                            (_, _, None) => {
                                first_error.get_or_insert(format!(
                                    "input \"{port}\": unknown kind code {}",
                                    p.kind
                                ));
                            }
                        }
                    }
                    values.push(&port, if p.present != 0 { value } else { None });
                }
                if let Some(e) = first_error {
                    return Err(e.into());
                }
                let frame = frame.as_ref().ok_or("frame pointer is null")?;
                let info = FrameInfo {
                    stream: frame.stream,
                    index: frame.index,
                    timestamp_ns: frame.timestamp_ns,
                    source: read_opt_str(frame.source, "frame source")?
                        .unwrap_or_default()
                        .into(),
                    width: frame.width,
                    height: frame.height,
                };
                let node = (instance as *mut Box<dyn Node>)
                    .as_mut()
                    .ok_or("instance is null")?;
                let mut result = None;
                run_node(&mut || result = Some(node.process(&info, &values)));
                let outputs = result.ok_or("the node's work did not run")??;
                emit_outputs(out, outputs)
            })
        }
    }

    /// Hands every output port's value to the host's sink.
    unsafe fn emit_outputs(out: *const OutputSinkC, outputs: Outputs) -> Result<(), NodeError> {
        let sink = unsafe { out.as_ref() }.ok_or("output sink is null")?;
        let mut store = CStore::default();
        for (port, value) in outputs.into_vec() {
            let named: Vec<NamedTensorC> = value
                .tensors()
                .iter()
                .map(|(n, t)| NamedTensorC {
                    name: store.str(n),
                    tensor: export_tensor(t),
                })
                .collect();
            let port_c = store.str(&port);
            // SAFETY: the host's sink, valid for this call; the arrays live until it returns.
            let status = unsafe {
                (sink.emit)(
                    sink.ctx,
                    port_c,
                    value.kind() as u32,
                    named.as_ptr(),
                    named.len() as u32,
                )
            };
            if status != STATUS_OK {
                return Err(format!("the engine refused output port \"{port}\"").into());
            }
        }
        Ok(())
    }

    unsafe extern "C" fn configure(host: *const HostConfigC, err: *const ErrorSinkC) -> i32 {
        unsafe {
            guarded(err, || {
                let exported = EXPORTED.get().ok_or("plugin table was not initialised")?;
                let host = host.as_ref().ok_or("host configuration is null")?;
                if (host.struct_size as usize) < std::mem::size_of::<HostConfigC>() {
                    return Err(format!(
                        "host configuration of {} bytes is smaller than ABI 1.1's {}",
                        host.struct_size,
                        std::mem::size_of::<HostConfigC>()
                    )
                    .into());
                }
                if let Some(on_load) = exported.on_load {
                    on_load(&HostConfig {
                        threads: host.threads.max(1) as usize,
                    });
                }
                Ok(())
            })
        }
    }

    unsafe extern "C" fn next_frame(
        instance: *mut c_void,
        frame: *mut FrameC,
        out: *const OutputSinkC,
        err: *const ErrorSinkC,
    ) -> i32 {
        // The frame's source text must outlive this call's return (the host copies it then).
        thread_local! {
            static SOURCE: std::cell::RefCell<Option<CString>> = const { std::cell::RefCell::new(None) };
        }
        let mut ended = false;
        let status = unsafe {
            guarded(err, || {
                let frame = frame.as_mut().ok_or("frame pointer is null")?;
                let node = (instance as *mut Box<dyn Node>)
                    .as_mut()
                    .ok_or("instance is null")?;
                let mut info = FrameInfo {
                    stream: frame.stream,
                    index: frame.index,
                    timestamp_ns: frame.timestamp_ns,
                    ..FrameInfo::default()
                };
                let Some(outputs) = node.next_frame(&mut info)? else {
                    ended = true;
                    return Ok(());
                };
                frame.stream = info.stream;
                frame.timestamp_ns = info.timestamp_ns;
                frame.width = info.width;
                frame.height = info.height;
                frame.source = SOURCE.with(|s| {
                    let c = CString::new(info.source.replace('\0', "")).unwrap_or_default();
                    s.borrow_mut().insert(c).as_ptr()
                });
                emit_outputs(out, outputs)
            })
        };
        if status == STATUS_OK && ended {
            STATUS_END_OF_STREAM
        } else {
            status
        }
    }

    unsafe extern "C" fn finish(instance: *mut c_void, err: *const ErrorSinkC) -> i32 {
        unsafe {
            guarded(err, || {
                let node = (instance as *mut Box<dyn Node>)
                    .as_mut()
                    .ok_or("instance is null")?;
                node.finish()
            })
        }
    }

    unsafe extern "C" fn destroy(instance: *mut c_void) {
        if !instance.is_null() {
            // A panic in a node's Drop must not unwind into the host either.
            let _ = catch_unwind(AssertUnwindSafe(|| {
                drop(unsafe { Box::from_raw(instance as *mut Box<dyn Node>) })
            }));
        }
    }
}

/// Exports node kinds from a `cdylib` crate as an engine plugin.
///
/// ```ignore
/// plugin_sdk::export_plugin!(name: "my_heads", version: env!("CARGO_PKG_VERSION"), kinds: my_kinds);
/// fn my_kinds() -> Vec<plugin_sdk::NodeKind> { vec![...] }
/// ```
///
/// `on_load: f` (optional) names a `fn(&plugin_sdk::HostConfig)` that the library runs once
/// when the host configures it, before any node is created: a family library sizes its
/// compute pool there (`kernels::configure_library(host.threads)`).
#[macro_export]
macro_rules! export_plugin {
    (name: $name:expr, version: $version:expr, kinds: $kinds:path $(, on_load: $on_load:expr)? $(,)?) => {
        /// Entry point of this engine plugin (see the plugin SDK's `abi` module).
        #[no_mangle]
        pub extern "C" fn engine_plugin_entry() -> *const $crate::abi::PluginTable {
            $crate::abi::export::table(
                $name,
                $version,
                $kinds,
                $crate::export_plugin!(@on_load $($on_load)?),
            )
        }
    };
    (@on_load $on_load:expr) => {
        Some($on_load as fn(&$crate::HostConfig))
    };
    (@on_load) => {
        None
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tensors_round_trip_through_dlpack_without_copy() {
        let t = Tensor::from_vec(&[2, 3], vec![1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0]).unwrap();
        let ptr = export_tensor(&t);
        let back = unsafe { import_tensor(ptr, None) }.unwrap();
        assert_eq!(back.shape(), &[2, 3]);
        assert_eq!(back.data_ptr(), t.data_ptr());
        assert_eq!(back.as_slice::<f32>().unwrap()[5], 6.0);
        for dtype in DType::ALL {
            let z = Tensor::zeros(dtype, &[0, 4]).unwrap();
            let back = unsafe { import_tensor(export_tensor(&z), None) }.unwrap();
            assert_eq!((back.dtype(), back.shape()), (dtype, &[0usize, 4][..]));
        }
    }

    #[test]
    fn non_compact_and_foreign_device_tensors_are_refused_and_released() {
        let t = Tensor::from_vec(&[2, 2], vec![1i32, 2, 3, 4]).unwrap();
        let p = export_tensor(&t);
        unsafe {
            *(*p).dl_tensor.strides = 1; // a transposed view
        }
        let err = unsafe { import_tensor(p, None) }.unwrap_err();
        assert!(err.contains("only compact row-major"), "{err}");
        let p = export_tensor(&t);
        unsafe { (*p).dl_tensor.device.device_type = 2 };
        assert!(unsafe { import_tensor(p, None) }
            .unwrap_err()
            .contains("device type 2"));
    }

    /// Hostile tensors are refused (and released) before any of their memory is read: an
    /// absurd ndim, a null data pointer with elements, a shape whose byte size overflows.
    #[test]
    fn hostile_tensors_are_refused_before_their_data_is_read() {
        let t = Tensor::from_vec(&[2, 2], vec![1i32, 2, 3, 4]).unwrap();
        let p = export_tensor(&t);
        unsafe { (*p).dl_tensor.ndim = 1 << 30 };
        let err = unsafe { import_tensor(p, None) }.unwrap_err();
        assert!(err.contains("exceeds the limit of 8 dimensions"), "{err}");
        let p = export_tensor(&t);
        unsafe { (*p).dl_tensor.data = std::ptr::null_mut() };
        let err = unsafe { import_tensor(p, None) }.unwrap_err();
        assert!(err.contains("null data pointer"), "{err}");
        let p = export_tensor(&t);
        unsafe {
            *(*p).dl_tensor.shape = i64::MAX / 2;
            *(*p).dl_tensor.shape.add(1) = 4;
            (*p).dl_tensor.strides = std::ptr::null_mut();
        }
        let err = unsafe { import_tensor(p, None) }.unwrap_err();
        assert!(err.contains("overflows"), "{err}");
        // An empty tensor may have no data.
        let z = Tensor::from_vec(&[0, 4], Vec::<f32>::new()).unwrap();
        let p = export_tensor(&z);
        unsafe { (*p).dl_tensor.data = std::ptr::null_mut() };
        assert_eq!(unsafe { import_tensor(p, None) }.unwrap().shape(), &[0, 4]);
        // Found by the dlpack fuzz target: an empty tensor whose other dimensions multiply
        // past i64 had its strides checked with an overflowing product.
        let z = Tensor::from_vec(&[0, 2, 2], Vec::<f32>::new()).unwrap();
        let p = export_tensor(&z);
        unsafe {
            *(*p).dl_tensor.shape.add(1) = 1 << 40;
            *(*p).dl_tensor.shape.add(2) = 1 << 40;
            *(*p).dl_tensor.strides.add(1) = 1 << 40;
        }
        assert_eq!(
            unsafe { import_tensor(p, None) }.unwrap().shape(),
            &[0, 1 << 40, 1 << 40]
        );
    }

    #[test]
    fn layout_matches_the_c_header() {
        // include/engine_plugin.h asserts the same sizes with _Static_assert.
        assert_eq!(std::mem::size_of::<PluginTable>(), 112);
        assert_eq!(std::mem::size_of::<DLManagedTensorVersioned>(), 80);
        assert_eq!(std::mem::size_of::<ParamValueC>(), 64);
        assert_eq!(std::mem::size_of::<PortDescC>(), 40);
    }

    #[test]
    fn param_values_round_trip() {
        let mut store = CStore::default();
        for (ty, v) in [
            (ParamType::Bool, ParamValue::Bool(true)),
            (ParamType::Int, ParamValue::Int(-3)),
            (ParamType::Float, ParamValue::Float(0.25)),
            (ParamType::Path, ParamValue::Str("a/b.pth".into())),
            (ParamType::IntList, ParamValue::IntList(vec![1, 2, 3])),
            (ParamType::FloatList, ParamValue::FloatList(vec![0.5])),
            (
                ParamType::StrList,
                ParamValue::StrList(vec!["x".into(), "y".into()]),
            ),
        ] {
            let c = store.param_value(ty, &v);
            assert_eq!(unsafe { read_param_value(&c, "p") }.unwrap(), v);
        }
    }
}
