//! A restricted unpickler for Detectron2 and Detectron (Caffe2 era) `.pkl` checkpoints: Python
//! pickles, protocols 2 to 5 and Python 2's among them, of dicts whose weights are numpy arrays
//! (`{"model": {name: ndarray}, "__author__": ..., "matching_heuristics": True}`,
//! `{"blobs": {name: ndarray}}` or `{name: ndarray}`).
//!
//! Why a reader of our own: serde-pickle cannot rebuild numpy arrays (it refuses globals, or
//! replaces them by `None` and loses the dtype), and pytorch-reader's pickle machine is private
//! and keeps numpy calls as opaque type names, without their data.
//!
//! **Nothing in a pickle is ever run.** The stack machine below interprets the opcodes these
//! files use; a global (`GLOBAL`, `STACK_GLOBAL`) is looked up in an allow-list as soon as it
//! is named, and anything else (`os.system`, `builtins.eval`,
//! `torch._utils._rebuild_tensor_v2`, ...) ends the read with [`PickleError::RefusedGlobal`].
//! The allowed ones are interpreted, never called: numpy's `_reconstruct` + `BUILD` (protocols
//! up to 4) and `_frombuffer` (protocol 5) become array descriptions, `numpy.dtype` + `BUILD`
//! a dtype and its byte order, `_codecs.encode(text, "latin1")` (how Python 3 writes bytes at
//! protocol 2) bytes, `collections.OrderedDict` and `set`/`frozenset` plain containers; numpy
//! scalars become an opaque value that is skipped.
//!
//! Hostile input never panics and never allocates without bound: every length the file
//! declares is checked against what is left of the input before it is sliced, the stack, the
//! memo and the number of objects are capped, shapes are checked for overflow and against
//! their data's length, whatever a memo reference could copy again and again (bytes decoded
//! from text, container items) is charged to a budget proportional to the input, and the walk
//! that names the arrays is bounded in depth and in visits (so shared and cyclic references
//! built through the memo cannot make it explode or loop).

use std::borrow::Cow;
use std::collections::HashMap;

/// Most values on the stack (and open MARKs), memo entries and objects a pickle may create.
/// A real Detectron2 checkpoint (some hundreds of arrays) uses a few thousand of each.
const MAX_STACK: usize = 1 << 22;
const MAX_MEMO: usize = 1 << 22;
const MAX_OBJECTS: usize = 1 << 22;
/// How deep dicts, lists and tuples may nest, and how many values the naming walk may visit.
const MAX_DEPTH: usize = 64;
const MAX_VISITS: usize = 1 << 22;
/// numpy's own limit on dimensions (NPY_MAXDIMS, numpy 2).
const MAX_NDIM: usize = 64;
/// A dtype name is a few characters ("f4", "<i8"); longer text is not a dtype.
const MAX_DTYPE_NAME: usize = 64;
/// What `torch.save(_use_new_zipfile_serialization=False)` pickles first: the legacy
/// container's magic number 0x1950a86a20f9469cfc6c, as LONG1 stores it (little-endian).
const TORCH_LEGACY_MAGIC: [u8; 10] = [0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19];

/// The element types a `.pkl` array may have (numpy's names in brackets).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dtype {
    /// f8
    F64,
    /// f4
    F32,
    /// f2
    F16,
    /// i8
    I64,
    /// i4
    I32,
    /// i2
    I16,
    /// i1
    I8,
    /// u1
    U8,
    /// b1
    Bool,
}

impl Dtype {
    pub fn size(self) -> usize {
        match self {
            Dtype::F64 | Dtype::I64 => 8,
            Dtype::F32 | Dtype::I32 => 4,
            Dtype::F16 | Dtype::I16 => 2,
            Dtype::I8 | Dtype::U8 | Dtype::Bool => 1,
        }
    }

    /// A numpy dtype name as `dtype.__reduce__` gives it ("f4"; a byte-order prefix is
    /// accepted too), with the byte order the name itself gives, if any. The error is the
    /// reason the array cannot be loaded.
    fn parse(name: &str) -> std::result::Result<(Dtype, Option<u8>), String> {
        let (order, base) = match name.as_bytes().first() {
            Some(&c @ (b'<' | b'>' | b'|' | b'=')) => (Some(c), &name[1..]),
            _ => (None, name),
        };
        let dtype = match base {
            "f8" => Dtype::F64,
            "f4" => Dtype::F32,
            "f2" => Dtype::F16,
            "i8" => Dtype::I64,
            "i4" => Dtype::I32,
            "i2" => Dtype::I16,
            "i1" => Dtype::I8,
            "u1" => Dtype::U8,
            "b1" => Dtype::Bool,
            n if n.starts_with('O') => {
                return Err("it is an object array (dtype 'O'), which holds Python objects rather than numbers: refused".into())
            }
            other => {
                return Err(format!(
                    "numpy dtype '{other}' is not supported (f2/f4/f8, i1/i2/i4/i8, u1 and bool are)"
                ))
            }
        };
        Ok((dtype, order))
    }
}

/// One array of the checkpoint, under its dotted name (the dict keys, and list indices, on
/// the way to it), with its data as little-endian bytes in C (row-major) order: borrowed from
/// the input when the file already stores it so.
#[derive(Debug)]
pub struct NumpyArray<'a> {
    pub name: String,
    pub dtype: Dtype,
    pub shape: Vec<usize>,
    pub data: Cow<'a, [u8]>,
}

#[derive(Debug, thiserror::Error)]
pub enum PickleError {
    #[error("refused global {name} (at offset {offset}): a .pkl checkpoint may only hold numpy arrays, and nothing in it is ever run")]
    RefusedGlobal { name: String, offset: usize },
    #[error("pickle opcode {name} (0x{code:02x}) at offset {offset} is not supported by this reader of numpy-array pickles")]
    UnsupportedOpcode {
        name: &'static str,
        code: u8,
        offset: usize,
    },
    #[error("byte 0x{code:02x} at offset {offset} is not a pickle opcode")]
    UnknownOpcode { code: u8, offset: usize },
    #[error("the pickle ends at offset {0} before its STOP opcode (a truncated file?)")]
    Truncated(usize),
    #[error("{reason} (at offset {offset})")]
    Malformed { offset: usize, reason: String },
    #[error("the pickle exceeds a safety limit: {0}")]
    Limit(String),
    /// After parsing: what the checkpoint holds cannot be read as named arrays.
    #[error("{0}")]
    Content(String),
    #[error("this is a legacy PyTorch checkpoint (torch.save), not a pickle of numpy arrays")]
    TorchLegacy,
}

/// Why [`read_arrays`] failed, and whether the pickle named a numpy global before it did (a
/// hint that the file was meant to be read here rather than as a PyTorch checkpoint).
#[derive(Debug, thiserror::Error)]
#[error("{error}")]
pub struct ReadError {
    pub error: PickleError,
    pub numpy_seen: bool,
}

impl ReadError {
    /// Whether the pickle is PyTorch's (a legacy torch.save container, a torch global or a
    /// persistent id): the caller should read it as a PyTorch checkpoint instead.
    pub fn is_torch(&self) -> bool {
        match &self.error {
            PickleError::TorchLegacy => true,
            PickleError::RefusedGlobal { name, .. } => name.starts_with("torch."),
            PickleError::UnsupportedOpcode { code, .. } => matches!(code, b'P' | b'Q'),
            _ => false,
        }
    }
}

/// Reads the numpy arrays of a pickled dict. Non-array values (strings, numbers, bools, numpy
/// scalars, None) are skipped; arrays nested in dicts, lists and tuples are named by the path
/// to them, joined with ".".
pub fn read_arrays(input: &[u8]) -> std::result::Result<Vec<NumpyArray<'_>>, ReadError> {
    let mut m = Machine::new(input);
    let outcome = m.run().and_then(|root| m.arrays(root));
    outcome.map_err(|error| ReadError {
        error,
        numpy_seen: m.numpy_seen,
    })
}

/// Stack values: scalars inline, everything else an index into [`Machine::objs`], so that the
/// memo and the stack share objects the way Python does (a dtype memoized before its `BUILD`
/// is seen with its byte order when fetched later).
#[derive(Clone, Copy, Debug)]
enum Value {
    None,
    Bool(bool),
    Int(i64),
    Float,
    Obj(usize),
}

/// The globals a `.pkl` checkpoint may name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Global {
    Reconstruct,
    FromBuffer,
    Ndarray,
    Dtype,
    Scalar,
    Encode,
    OrderedDict,
    Set,
    Bytes,
}

impl Global {
    fn lookup(module: &str, name: &str) -> Option<Global> {
        Some(match (module, name) {
            ("numpy.core.multiarray" | "numpy._core.multiarray", "_reconstruct") => {
                Global::Reconstruct
            }
            ("numpy.core.multiarray" | "numpy._core.multiarray", "scalar") => Global::Scalar,
            ("numpy.core.numeric" | "numpy._core.numeric", "_frombuffer") => Global::FromBuffer,
            ("numpy", "ndarray") => Global::Ndarray,
            ("numpy", "dtype") => Global::Dtype,
            ("_codecs", "encode") => Global::Encode,
            ("collections", "OrderedDict") => Global::OrderedDict,
            // Protocols below 3 name the builtins module by its Python 2 name.
            ("builtins" | "__builtin__", "set" | "frozenset") => Global::Set,
            // Python 3 writes empty bytes at protocol 2 as `bytes()`.
            ("builtins" | "__builtin__", "bytes") => Global::Bytes,
            _ => return None,
        })
    }

    /// For messages (numpy 1's module names).
    fn python_name(self) -> &'static str {
        match self {
            Global::Reconstruct => "numpy.core.multiarray._reconstruct",
            Global::FromBuffer => "numpy.core.numeric._frombuffer",
            Global::Ndarray => "numpy.ndarray",
            Global::Dtype => "numpy.dtype",
            Global::Scalar => "numpy.core.multiarray.scalar",
            Global::Encode => "_codecs.encode",
            Global::OrderedDict => "collections.OrderedDict",
            Global::Set => "builtins.set",
            Global::Bytes => "builtins.bytes",
        }
    }

    fn is_numpy(self) -> bool {
        matches!(
            self,
            Global::Reconstruct
                | Global::FromBuffer
                | Global::Ndarray
                | Global::Dtype
                | Global::Scalar
        )
    }
}

/// An array whose `BUILD` (or `_frombuffer` call) was read: its data stays where it is (an
/// index of a bytes object) until the array is named, when it is put in C order.
#[derive(Debug)]
struct ArrayDesc {
    dtype: Dtype,
    shape: Vec<usize>,
    fortran: bool,
    big_endian: bool,
    data: usize,
}

#[derive(Debug)]
enum Obj<'a> {
    /// A Python str as the UTF-8 the pickle holds, checked when it is read as text: the
    /// array data of a protocol 2 checkpoint is hundreds of megabytes of str that is only
    /// ever turned back into bytes (see [`latin1`]), in one pass.
    Str(&'a [u8]),
    /// Python 3 bytes or bytearray, or a Python 2 str.
    Bytes(Cow<'a, [u8]>),
    /// An int too wide for an i64 (kept only to recognise torch's legacy magic number).
    BigInt(&'a [u8]),
    Tuple(Vec<Value>),
    List(Vec<Value>),
    Dict(Vec<(Value, Value)>),
    Global(Global),
    Dtype {
        name: String,
        byteorder: Option<u8>,
    },
    /// `_reconstruct(ndarray, ...)` before its `BUILD`.
    ArrayStub,
    Array(ArrayDesc),
    /// An array of a dtype that cannot be loaded; the reason is reported under its name.
    BadArray(String),
    /// A numpy scalar (`numpy.core.multiarray.scalar`): skipped.
    Scalar,
}

fn obj_type(o: &Obj<'_>) -> &'static str {
    match o {
        Obj::Str(_) => "str",
        Obj::Bytes(_) => "bytes",
        Obj::BigInt(_) => "int",
        Obj::Tuple(_) => "tuple",
        Obj::List(_) => "list",
        Obj::Dict(_) => "dict",
        Obj::Global(_) => "global",
        Obj::Dtype { .. } => "numpy dtype",
        Obj::ArrayStub | Obj::Array(_) | Obj::BadArray(_) => "numpy array",
        Obj::Scalar => "numpy scalar",
    }
}

/// The name of every pickle opcode, for errors.
fn opcode_name(code: u8) -> Option<&'static str> {
    Some(match code {
        b'(' => "MARK",
        b'.' => "STOP",
        b'0' => "POP",
        b'1' => "POP_MARK",
        b'2' => "DUP",
        b'F' => "FLOAT",
        b'I' => "INT",
        b'J' => "BININT",
        b'K' => "BININT1",
        b'L' => "LONG",
        b'M' => "BININT2",
        b'N' => "NONE",
        b'P' => "PERSID",
        b'Q' => "BINPERSID",
        b'R' => "REDUCE",
        b'S' => "STRING",
        b'T' => "BINSTRING",
        b'U' => "SHORT_BINSTRING",
        b'V' => "UNICODE",
        b'X' => "BINUNICODE",
        b'a' => "APPEND",
        b'b' => "BUILD",
        b'c' => "GLOBAL",
        b'd' => "DICT",
        b'}' => "EMPTY_DICT",
        b'e' => "APPENDS",
        b'g' => "GET",
        b'h' => "BINGET",
        b'i' => "INST",
        b'j' => "LONG_BINGET",
        b'l' => "LIST",
        b']' => "EMPTY_LIST",
        b'o' => "OBJ",
        b'p' => "PUT",
        b'q' => "BINPUT",
        b'r' => "LONG_BINPUT",
        b's' => "SETITEM",
        b't' => "TUPLE",
        b')' => "EMPTY_TUPLE",
        b'u' => "SETITEMS",
        b'G' => "BINFLOAT",
        b'B' => "BINBYTES",
        b'C' => "SHORT_BINBYTES",
        0x80 => "PROTO",
        0x81 => "NEWOBJ",
        0x82 => "EXT1",
        0x83 => "EXT2",
        0x84 => "EXT4",
        0x85 => "TUPLE1",
        0x86 => "TUPLE2",
        0x87 => "TUPLE3",
        0x88 => "NEWTRUE",
        0x89 => "NEWFALSE",
        0x8a => "LONG1",
        0x8b => "LONG4",
        0x8c => "SHORT_BINUNICODE",
        0x8d => "BINUNICODE8",
        0x8e => "BINBYTES8",
        0x8f => "EMPTY_SET",
        0x90 => "ADDITEMS",
        0x91 => "FROZENSET",
        0x92 => "NEWOBJ_EX",
        0x93 => "STACK_GLOBAL",
        0x94 => "MEMOIZE",
        0x95 => "FRAME",
        0x96 => "BYTEARRAY8",
        0x97 => "NEXT_BUFFER",
        0x98 => "READONLY_BUFFER",
        _ => return None,
    })
}

/// Text for messages, cut short: a hostile name may be long.
fn shown(text: &str) -> String {
    const AT_MOST: usize = 120;
    if text.chars().count() <= AT_MOST {
        text.to_string()
    } else {
        format!("{}...", text.chars().take(AT_MOST).collect::<String>())
    }
}

/// Python 2 str (bytes) as text: UTF-8 when it is, else latin-1 (what Python 3 reads Python 2
/// pickles with, `encoding="latin1"`).
fn bytes_text(b: &[u8]) -> Cow<'_, str> {
    match std::str::from_utf8(b) {
        Ok(s) => Cow::Borrowed(s),
        Err(_) => Cow::Owned(b.iter().map(|&c| char::from(c)).collect()),
    }
}

/// Text whose characters are all below 256, as the bytes they stand for (`_codecs.encode(s,
/// "latin1")`, and array data that a Python 2 pickle read as text holds).
fn latin1(utf8: &[u8]) -> Option<Vec<u8>> {
    // Validates and decodes in one pass (a UTF-8 check, then a char-by-char decode, took about
    // 1.6x as long on a 160 MB protocol 2 checkpoint): U+0000..U+007F are one byte,
    // U+0080..U+00FF two, a lead of 0xC2 or 0xC3 and a continuation byte (0b10xx_xxxx).
    // Anything else (a lead of 0xC4 or above starts a character above 255; 0xC0 and 0xC1 are
    // never UTF-8) is refused.
    let mut out = vec![0u8; utf8.len()];
    let mut n = 0usize;
    let mut bad = false;
    // Whether the byte before opened a two-byte character.
    let mut lead = false;
    let nexts = utf8.iter().skip(1).chain(std::iter::once(&0));
    for (&c, &next) in utf8.iter().zip(nexts) {
        let continuation = c & 0xc0 == 0x80;
        bad |= (continuation != lead) | (c >= 0xc4) | (c & 0xfe == 0xc0);
        lead = c >= 0xc0;
        // Selected by mask rather than by a branch, which random data would mispredict.
        let mask = 0u8.wrapping_sub(u8::from(lead));
        let v = (mask & (((c & 0x03) << 6) | (next & 0x3f))) | (!mask & c);
        if let Some(slot) = out.get_mut(n) {
            *slot = v;
        }
        // A continuation byte only completes the character before it.
        n += usize::from(!continuation);
    }
    if bad || lead {
        return None;
    }
    out.truncate(n);
    Some(out)
}

/// Reorders an array's elements into C order and little-endian bytes. `data` holds
/// `shape.product() * size` bytes (checked when the array was built).
fn c_order_le(data: &[u8], size: usize, shape: &[usize], fortran: bool, swap: bool) -> Vec<u8> {
    let mut out = vec![0u8; data.len()];
    if data.is_empty() {
        return out;
    }
    // Element strides of the stored layout: Fortran order has the first axis fastest.
    let mut strides = vec![0usize; shape.len()];
    let mut acc = 1usize;
    let axes: Vec<usize> = if fortran {
        (0..shape.len()).collect()
    } else {
        (0..shape.len()).rev().collect()
    };
    for &k in &axes {
        strides[k] = acc;
        acc *= shape[k];
    }
    let mut index = vec![0usize; shape.len()];
    let mut src = 0usize;
    for dst in out.chunks_exact_mut(size) {
        // Always in range (the data's length was checked against the shape); `get` keeps a
        // broken invariant from becoming a panic.
        let Some(from) = data.get(src * size..(src + 1) * size) else {
            break;
        };
        if swap {
            for (d, s) in dst.iter_mut().zip(from.iter().rev()) {
                *d = *s;
            }
        } else {
            dst.copy_from_slice(from);
        }
        // Next C-order index (last axis fastest), and where it is stored.
        for k in (0..shape.len()).rev() {
            index[k] += 1;
            src += strides[k];
            if index[k] < shape[k] {
                break;
            }
            src -= strides[k] * shape[k];
            index[k] = 0;
        }
    }
    out
}

struct Machine<'a> {
    input: &'a [u8],
    pos: usize,
    stack: Vec<Value>,
    /// Stack lengths at each open MARK.
    marks: Vec<usize>,
    memo: HashMap<usize, Value>,
    objs: Vec<Obj<'a>>,
    /// Bytes that copies driven by memo references (text decoded to bytes, container items)
    /// may still make: a memoized value can be fetched any number of times, so without this a
    /// small file could make huge copies.
    budget: usize,
    numpy_seen: bool,
}

type Result<T> = std::result::Result<T, PickleError>;

fn malformed(offset: usize, reason: impl Into<String>) -> PickleError {
    PickleError::Malformed {
        offset,
        reason: reason.into(),
    }
}

impl<'a> Machine<'a> {
    fn new(input: &'a [u8]) -> Machine<'a> {
        Machine {
            input,
            pos: 0,
            stack: Vec::new(),
            marks: Vec::new(),
            memo: HashMap::new(),
            objs: Vec::new(),
            budget: input.len().saturating_mul(4).saturating_add(1 << 20),
            numpy_seen: false,
        }
    }

    // --- Reading the input. Every length is checked against what is left before slicing.

    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&end| end <= self.input.len())
            .ok_or(PickleError::Truncated(self.input.len()))?;
        let bytes = &self.input[self.pos..end];
        self.pos = end;
        Ok(bytes)
    }

    fn take_array<const N: usize>(&mut self) -> Result<[u8; N]> {
        let b = self.take(N)?;
        let mut out = [0u8; N];
        out.copy_from_slice(b);
        Ok(out)
    }

    fn u8(&mut self) -> Result<u8> {
        Ok(self.take_array::<1>()?[0])
    }

    fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_le_bytes(self.take_array()?))
    }

    /// A declared length: larger than the input can never be satisfied, and `take` says so.
    fn len_u32(&mut self) -> Result<usize> {
        usize::try_from(self.u32()?).map_err(|_| PickleError::Truncated(self.input.len()))
    }

    fn len_u64(&mut self) -> Result<usize> {
        let n = u64::from_le_bytes(self.take_array()?);
        usize::try_from(n).map_err(|_| PickleError::Truncated(self.input.len()))
    }

    fn len_i32(&mut self, at: usize) -> Result<usize> {
        let n = i32::from_le_bytes(self.take_array()?);
        usize::try_from(n).map_err(|_| malformed(at, format!("negative length {n}")))
    }

    fn line(&mut self, at: usize) -> Result<&'a str> {
        let rest = &self.input[self.pos..];
        let n = rest
            .iter()
            .position(|&c| c == b'\n')
            .ok_or(PickleError::Truncated(self.input.len()))?;
        let text = self.take(n)?;
        self.pos += 1;
        std::str::from_utf8(text).map_err(|_| malformed(at, "a GLOBAL name is not UTF-8"))
    }

    fn text(&mut self, n: usize) -> Result<Obj<'a>> {
        Ok(Obj::Str(self.take(n)?))
    }

    // --- The stack, marks, memo and objects.

    fn push(&mut self, v: Value) -> Result<()> {
        if self.stack.len() >= MAX_STACK {
            return Err(PickleError::Limit(format!(
                "more than {MAX_STACK} values on the stack"
            )));
        }
        self.stack.push(v);
        Ok(())
    }

    fn alloc(&mut self, o: Obj<'a>) -> Result<usize> {
        if self.objs.len() >= MAX_OBJECTS {
            return Err(PickleError::Limit(format!(
                "more than {MAX_OBJECTS} objects"
            )));
        }
        self.objs.push(o);
        Ok(self.objs.len() - 1)
    }

    fn new_obj(&mut self, o: Obj<'a>) -> Result<Value> {
        self.alloc(o).map(Value::Obj)
    }

    fn push_obj(&mut self, o: Obj<'a>) -> Result<()> {
        let v = self.new_obj(o)?;
        self.push(v)
    }

    /// The floor of the current frame: like Python's unpickler, values below the last MARK
    /// cannot be popped or used until the MARK is closed.
    fn floor(&self) -> usize {
        self.marks.last().copied().unwrap_or(0)
    }

    fn pop(&mut self, at: usize) -> Result<Value> {
        if self.stack.len() <= self.floor() {
            return Err(malformed(at, "the pickle stack is empty"));
        }
        self.stack
            .pop()
            .ok_or_else(|| malformed(at, "the pickle stack is empty"))
    }

    fn top(&self, at: usize) -> Result<Value> {
        if self.stack.len() <= self.floor() {
            return Err(malformed(at, "the pickle stack is empty"));
        }
        self.stack
            .last()
            .copied()
            .ok_or_else(|| malformed(at, "the pickle stack is empty"))
    }

    fn pop_mark(&mut self, at: usize) -> Result<Vec<Value>> {
        let m = self
            .marks
            .pop()
            .ok_or_else(|| malformed(at, "no MARK to close"))?;
        if m > self.stack.len() {
            return Err(malformed(at, "a MARK above the stack"));
        }
        Ok(self.stack.split_off(m))
    }

    fn memo_put(&mut self, index: usize, at: usize) -> Result<()> {
        let v = self.top(at)?;
        if self.memo.len() >= MAX_MEMO && !self.memo.contains_key(&index) {
            return Err(PickleError::Limit(format!(
                "more than {MAX_MEMO} memo entries"
            )));
        }
        self.memo.insert(index, v);
        Ok(())
    }

    fn memo_get(&mut self, index: usize, at: usize) -> Result<()> {
        let v = self
            .memo
            .get(&index)
            .copied()
            .ok_or_else(|| malformed(at, format!("memo entry {index} was never stored")))?;
        self.push(v)
    }

    fn charge(&mut self, bytes: usize) -> Result<()> {
        self.budget = self.budget.checked_sub(bytes).ok_or_else(|| {
            PickleError::Limit("its memo references would copy more than 4x the file's size".into())
        })?;
        Ok(())
    }

    fn obj(&self, v: Value) -> Option<&Obj<'a>> {
        match v {
            Value::Obj(i) => self.objs.get(i),
            _ => None,
        }
    }

    fn type_name(&self, v: Value) -> &'static str {
        match v {
            Value::None => "None",
            Value::Bool(_) => "bool",
            Value::Int(_) => "int",
            Value::Float => "float",
            Value::Obj(_) => self.obj(v).map_or("object", obj_type),
        }
    }

    /// The items of a tuple or list, borrowed (callers copy out the few they need: a memoized
    /// tuple may be passed any number of times).
    fn items(&self, v: Value, what: &str, at: usize) -> Result<&[Value]> {
        match self.obj(v) {
            Some(Obj::Tuple(items) | Obj::List(items)) => Ok(items),
            _ => Err(malformed(
                at,
                format!("{what} must be a tuple, not a {}", self.type_name(v)),
            )),
        }
    }

    fn text_of(&self, v: Value) -> Option<Cow<'_, str>> {
        match self.obj(v)? {
            // Python writes lone surrogates with "surrogatepass", which is not UTF-8; no name
            // or dtype of a checkpoint has them.
            Obj::Str(s) => std::str::from_utf8(s).ok().map(Cow::Borrowed),
            Obj::Bytes(b) => Some(bytes_text(b)),
            _ => None,
        }
    }

    fn int_of(&self, v: Value) -> Option<i64> {
        match v {
            Value::Int(i) => Some(i),
            Value::Bool(b) => Some(i64::from(b)),
            _ => None,
        }
    }

    // --- The machine.

    fn run(&mut self) -> Result<Value> {
        loop {
            let at = self.pos;
            let code = self.u8()?;
            match code {
                0x80 => {
                    let protocol = self.u8()?;
                    if protocol > 5 {
                        return Err(malformed(
                            at,
                            format!("pickle protocol {protocol} (known: 0 to 5)"),
                        ));
                    }
                }
                // FRAME: a length hint for buffered readers; the whole input is in memory.
                0x95 => {
                    self.take(8)?;
                }
                b'.' => return self.pop(at),
                b'}' => self.push_obj(Obj::Dict(Vec::new()))?,
                b']' | 0x8f => self.push_obj(Obj::List(Vec::new()))?,
                b')' => self.push_obj(Obj::Tuple(Vec::new()))?,
                b'(' => {
                    if self.marks.len() >= MAX_STACK {
                        return Err(PickleError::Limit(format!("more than {MAX_STACK} MARKs")));
                    }
                    self.marks.push(self.stack.len());
                }
                b't' => {
                    let items = self.pop_mark(at)?;
                    self.push_obj(Obj::Tuple(items))?;
                }
                b'l' | 0x91 => {
                    let items = self.pop_mark(at)?;
                    self.push_obj(Obj::List(items))?;
                }
                b'd' => {
                    let items = self.pop_mark(at)?;
                    if !items.len().is_multiple_of(2) {
                        return Err(malformed(at, "DICT with an odd number of items"));
                    }
                    let pairs = items.chunks_exact(2).map(|p| (p[0], p[1])).collect();
                    self.push_obj(Obj::Dict(pairs))?;
                }
                0x85..=0x87 => {
                    let n = usize::from(code - 0x84);
                    let mut items = Vec::with_capacity(n);
                    for _ in 0..n {
                        items.push(self.pop(at)?);
                    }
                    items.reverse();
                    self.push_obj(Obj::Tuple(items))?;
                }
                b's' => {
                    let v = self.pop(at)?;
                    let k = self.pop(at)?;
                    self.set_items(vec![k, v], at)?;
                }
                b'u' => {
                    let items = self.pop_mark(at)?;
                    self.set_items(items, at)?;
                }
                b'a' => {
                    let v = self.pop(at)?;
                    self.append(vec![v], at)?;
                }
                b'e' | 0x90 => {
                    let items = self.pop_mark(at)?;
                    self.append(items, at)?;
                }
                b'0' => {
                    self.pop(at)?;
                }
                b'1' => {
                    self.pop_mark(at)?;
                }
                b'2' => {
                    let v = self.top(at)?;
                    self.push(v)?;
                }
                b'q' => {
                    let i = usize::from(self.u8()?);
                    self.memo_put(i, at)?;
                }
                b'r' => {
                    let i = self.len_u32()?;
                    self.memo_put(i, at)?;
                }
                0x94 => self.memo_put(self.memo.len(), at)?,
                b'h' => {
                    let i = usize::from(self.u8()?);
                    self.memo_get(i, at)?;
                }
                b'j' => {
                    let i = self.len_u32()?;
                    self.memo_get(i, at)?;
                }
                b'c' => {
                    let module = self.line(at)?;
                    let name = self.line(at)?;
                    self.global(module, name, at)?;
                }
                0x93 => {
                    let name = self.pop(at)?;
                    let module = self.pop(at)?;
                    let (Some(Obj::Str(m)), Some(Obj::Str(n))) = (self.obj(module), self.obj(name))
                    else {
                        return Err(malformed(at, "STACK_GLOBAL needs two strings"));
                    };
                    let (m, n) = (bytes_text(m).into_owned(), bytes_text(n).into_owned());
                    self.global(&m, &n, at)?;
                }
                b'R' | 0x81 => {
                    let args = self.pop(at)?;
                    let callable = self.pop(at)?;
                    let v = self.call(callable, args, code == 0x81, at)?;
                    self.push(v)?;
                }
                b'b' => {
                    let state = self.pop(at)?;
                    let target = self.top(at)?;
                    self.build(target, state, at)?;
                }
                b'J' => {
                    let v = i32::from_le_bytes(self.take_array()?);
                    self.push(Value::Int(i64::from(v)))?;
                }
                b'K' => {
                    let v = self.u8()?;
                    self.push(Value::Int(i64::from(v)))?;
                }
                b'M' => {
                    let v = u16::from_le_bytes(self.take_array()?);
                    self.push(Value::Int(i64::from(v)))?;
                }
                0x8a => {
                    let n = usize::from(self.u8()?);
                    self.long(n)?;
                }
                0x8b => {
                    let n = self.len_i32(at)?;
                    self.long(n)?;
                }
                b'G' => {
                    // The value is never needed: floats only appear in metadata.
                    self.take(8)?;
                    self.push(Value::Float)?;
                }
                b'N' => self.push(Value::None)?,
                0x88 => self.push(Value::Bool(true))?,
                0x89 => self.push(Value::Bool(false))?,
                0x8c => {
                    let n = usize::from(self.u8()?);
                    let s = self.text(n)?;
                    self.push_obj(s)?;
                }
                b'X' => {
                    let n = self.len_u32()?;
                    let s = self.text(n)?;
                    self.push_obj(s)?;
                }
                0x8d => {
                    let n = self.len_u64()?;
                    let s = self.text(n)?;
                    self.push_obj(s)?;
                }
                // Python 2 str (SHORT_BINSTRING, BINSTRING) is bytes, as are Python 3 bytes
                // and (protocol 5, in-band) bytearray.
                b'U' | b'C' => {
                    let n = usize::from(self.u8()?);
                    let b = self.take(n)?;
                    self.push_obj(Obj::Bytes(Cow::Borrowed(b)))?;
                }
                b'T' => {
                    let n = self.len_i32(at)?;
                    let b = self.take(n)?;
                    self.push_obj(Obj::Bytes(Cow::Borrowed(b)))?;
                }
                b'B' => {
                    let n = self.len_u32()?;
                    let b = self.take(n)?;
                    self.push_obj(Obj::Bytes(Cow::Borrowed(b)))?;
                }
                0x8e | 0x96 => {
                    let n = self.len_u64()?;
                    let b = self.take(n)?;
                    self.push_obj(Obj::Bytes(Cow::Borrowed(b)))?;
                }
                _ => {
                    return Err(match opcode_name(code) {
                        Some(name) => PickleError::UnsupportedOpcode {
                            name,
                            code,
                            offset: at,
                        },
                        None => PickleError::UnknownOpcode { code, offset: at },
                    })
                }
            }
        }
    }

    /// LONG1/LONG4: a little-endian two's-complement integer of `n` bytes.
    fn long(&mut self, n: usize) -> Result<()> {
        let b = self.take(n)?;
        if n > 8 {
            return self.push_obj(Obj::BigInt(b));
        }
        let fill = if b.last().is_some_and(|&c| c & 0x80 != 0) {
            0xff
        } else {
            0
        };
        let mut full = [fill; 8];
        full[..n].copy_from_slice(b);
        self.push(Value::Int(i64::from_le_bytes(full)))
    }

    fn global(&mut self, module: &str, name: &str, at: usize) -> Result<()> {
        let Some(g) = Global::lookup(module, name) else {
            return Err(PickleError::RefusedGlobal {
                name: shown(&format!("{module}.{name}")),
                offset: at,
            });
        };
        self.numpy_seen |= g.is_numpy();
        self.push_obj(Obj::Global(g))
    }

    fn set_items(&mut self, items: Vec<Value>, at: usize) -> Result<()> {
        if !items.len().is_multiple_of(2) {
            return Err(malformed(at, "SETITEMS with an odd number of items"));
        }
        let target = self.top(at)?;
        let found = self.type_name(target);
        match target {
            Value::Obj(i) => match self.objs.get_mut(i) {
                Some(Obj::Dict(pairs)) => {
                    pairs.extend(items.chunks_exact(2).map(|p| (p[0], p[1])));
                    Ok(())
                }
                _ => Err(malformed(at, format!("SETITEM on a {found}, not a dict"))),
            },
            _ => Err(malformed(at, format!("SETITEM on a {found}, not a dict"))),
        }
    }

    fn append(&mut self, items: Vec<Value>, at: usize) -> Result<()> {
        let target = self.top(at)?;
        let found = self.type_name(target);
        match target {
            Value::Obj(i) => match self.objs.get_mut(i) {
                Some(Obj::List(list)) => {
                    list.extend(items);
                    Ok(())
                }
                _ => Err(malformed(at, format!("APPEND on a {found}, not a list"))),
            },
            _ => Err(malformed(at, format!("APPEND on a {found}, not a list"))),
        }
    }

    /// REDUCE (and NEWOBJ): interprets a call of an allowed global; nothing is run.
    fn call(&mut self, callable: Value, args: Value, newobj: bool, at: usize) -> Result<Value> {
        let g = match self.obj(callable) {
            Some(Obj::Global(g)) => *g,
            _ => {
                return Err(malformed(
                    at,
                    format!("REDUCE of a {}, not a global", self.type_name(callable)),
                ))
            }
        };
        if newobj && !matches!(g, Global::OrderedDict | Global::Set) {
            return Err(malformed(
                at,
                format!("NEWOBJ of {} is not expected", g.python_name()),
            ));
        }
        let args = self.items(args, "call arguments", at)?;
        match (g, args) {
            (Global::Reconstruct, &[cls, _, _]) => match self.obj(cls) {
                Some(Obj::Global(Global::Ndarray)) => self.new_obj(Obj::ArrayStub),
                _ => Err(malformed(
                    at,
                    format!(
                        "_reconstruct of a {}, not numpy.ndarray",
                        self.type_name(cls)
                    ),
                )),
            },
            (Global::Dtype, &[name, ..]) => {
                let name = self
                    .text_of(name)
                    .filter(|n| n.len() <= MAX_DTYPE_NAME)
                    .ok_or_else(|| malformed(at, "numpy.dtype without a short name"))?
                    .into_owned();
                self.new_obj(Obj::Dtype {
                    name,
                    byteorder: None,
                })
            }
            (Global::Scalar, _) => self.new_obj(Obj::Scalar),
            (Global::FromBuffer, &[buffer, dtype, shape, order]) => {
                let fortran = match self.text_of(order).as_deref() {
                    Some("C") => false,
                    Some("F") => true,
                    _ => return Err(malformed(at, "_frombuffer order is neither 'C' nor 'F'")),
                };
                let array = self.array(shape, dtype, fortran, buffer, at)?;
                self.new_obj(array)
            }
            (Global::Encode, &[text, ref rest @ ..]) if rest.len() <= 1 => {
                let encoding = match rest.first() {
                    Some(&e) => self.text_of(e).map(Cow::into_owned),
                    None => Some("utf-8".to_string()),
                };
                if !matches!(encoding.as_deref(), Some("latin1" | "latin-1")) {
                    return Err(malformed(
                        at,
                        "_codecs.encode with an encoding other than latin1",
                    ));
                }
                let bytes = match self.obj(text) {
                    Some(Obj::Str(s)) => latin1(s),
                    _ => None,
                }
                .ok_or_else(|| {
                    malformed(at, "_codecs.encode of something other than latin-1 text")
                })?;
                self.charge(bytes.len())?;
                self.new_obj(Obj::Bytes(Cow::Owned(bytes)))
            }
            (Global::OrderedDict, &[]) => self.new_obj(Obj::Dict(Vec::new())),
            // Python 2's OrderedDict.__reduce__ passes its items: [[key, value], ...].
            (Global::OrderedDict, &[items]) => {
                let n = self.items(items, "OrderedDict items", at)?.len();
                self.charge(n.saturating_mul(32))?;
                let items = self.items(items, "OrderedDict items", at)?.to_vec();
                let mut pairs = Vec::with_capacity(items.len());
                for item in items {
                    match *self.items(item, "an OrderedDict item", at)? {
                        [k, v] => pairs.push((k, v)),
                        _ => return Err(malformed(at, "an OrderedDict item is not a pair")),
                    }
                }
                self.new_obj(Obj::Dict(pairs))
            }
            (Global::Set, &[]) => self.new_obj(Obj::List(Vec::new())),
            (Global::Set, &[items]) => {
                let n = self.items(items, "set items", at)?.len();
                self.charge(n.saturating_mul(16))?;
                let items = self.items(items, "set items", at)?.to_vec();
                self.new_obj(Obj::List(items))
            }
            (Global::Bytes, &[]) => self.new_obj(Obj::Bytes(Cow::Borrowed(&[]))),
            (g, args) => Err(malformed(
                at,
                format!(
                    "a call of {} with {} arguments is not expected",
                    g.python_name(),
                    args.len()
                ),
            )),
        }
    }

    /// BUILD: the state of a numpy dtype (its byte order) or array (shape, dtype, order,
    /// data). A dict or list (a subclass with attributes) keeps its items; its state is not
    /// needed.
    fn build(&mut self, target: Value, state: Value, at: usize) -> Result<()> {
        let Value::Obj(i) = target else {
            return Err(malformed(
                at,
                format!("BUILD of a {}", self.type_name(target)),
            ));
        };
        match self.objs.get(i) {
            Some(Obj::Dtype { .. }) => {
                let order = {
                    let items = self.items(state, "a dtype's state", at)?;
                    // (3, '<', None, ...) since numpy 1.0; very old numpy wrote the byte
                    // order first.
                    let text = match items {
                        [Value::Int(_), order, ..] | [order, ..] => self.text_of(*order),
                        [] => None,
                    };
                    match text.as_deref().map(str::as_bytes) {
                        Some(&[c @ (b'<' | b'>' | b'|' | b'=')]) => c,
                        _ => return Err(malformed(at, "a numpy dtype's state has no byte order")),
                    }
                };
                if let Some(Obj::Dtype { byteorder, .. }) = self.objs.get_mut(i) {
                    *byteorder = Some(order);
                }
                Ok(())
            }
            Some(Obj::ArrayStub | Obj::Array(_) | Obj::BadArray(_)) => {
                let items = self.items(state, "an array's state", at)?;
                // (version, shape, dtype, is_fortran, data); before numpy 1.? no version.
                let (shape, dtype, fortran, data) = match *items {
                    [_, shape, dtype, fortran, data] | [shape, dtype, fortran, data] => {
                        (shape, dtype, fortran, data)
                    }
                    _ => {
                        return Err(malformed(
                            at,
                            format!("an array's state has {} fields, not 5", items.len()),
                        ))
                    }
                };
                let fortran = self
                    .int_of(fortran)
                    .ok_or_else(|| malformed(at, "an array's Fortran flag is not a bool"))?
                    != 0;
                let array = self.array(shape, dtype, fortran, data, at)?;
                self.objs[i] = array;
                Ok(())
            }
            Some(Obj::Dict(_) | Obj::List(_)) => Ok(()),
            _ => Err(malformed(
                at,
                format!("BUILD of a {}", self.type_name(target)),
            )),
        }
    }

    /// An array from its shape, dtype, order and data, checked: the shape's product must not
    /// overflow and the data must hold exactly that many elements. A dtype that cannot be
    /// loaded gives a [`Obj::BadArray`], reported under the array's name.
    fn array(
        &mut self,
        shape: Value,
        dtype: Value,
        fortran: bool,
        data: Value,
        at: usize,
    ) -> Result<Obj<'a>> {
        let (name, byteorder) = match self.obj(dtype) {
            Some(Obj::Dtype { name, byteorder }) => (name.clone(), *byteorder),
            _ => {
                return Err(malformed(
                    at,
                    format!("an array's dtype is a {}", self.type_name(dtype)),
                ))
            }
        };
        let (dtype, name_order) = match Dtype::parse(&name) {
            Ok(parsed) => parsed,
            Err(reason) => return Ok(Obj::BadArray(reason)),
        };
        let dims = self.items(shape, "an array's shape", at)?;
        if dims.len() > MAX_NDIM {
            return Err(malformed(
                at,
                format!("an array of {} dimensions", dims.len()),
            ));
        }
        let shape = dims
            .iter()
            .map(|&d| {
                self.int_of(d)
                    .and_then(|d| usize::try_from(d).ok())
                    .ok_or_else(|| malformed(at, "an array dimension is not a size"))
            })
            .collect::<Result<Vec<usize>>>()?;
        let bytes = shape
            .iter()
            .try_fold(dtype.size(), |acc, &d| acc.checked_mul(d))
            .ok_or_else(|| malformed(at, format!("array shape {shape:?} overflows")))?;
        let data = match (data, self.obj(data)) {
            (Value::Obj(d), Some(Obj::Bytes(_))) => d,
            // A Python 2 pickle read by Python 3 as text: numpy encodes it back as latin-1.
            (_, Some(Obj::Str(s))) => {
                let b = latin1(s).ok_or_else(|| malformed(at, "array data is not latin-1 text"))?;
                self.charge(b.len())?;
                self.alloc(Obj::Bytes(Cow::Owned(b)))?
            }
            _ => {
                return Err(malformed(
                    at,
                    format!("array data is a {}, not bytes", self.type_name(data)),
                ))
            }
        };
        let held = match self.objs.get(data) {
            Some(Obj::Bytes(b)) => b.len(),
            _ => 0,
        };
        if held != bytes {
            return Err(malformed(
                at,
                format!(
                    "a {name} array of shape {shape:?} needs {bytes} bytes, its data has {held}"
                ),
            ));
        }
        Ok(Obj::Array(ArrayDesc {
            dtype,
            shape,
            fortran,
            big_endian: name_order.or(byteorder) == Some(b'>'),
            data,
        }))
    }

    /// Names every array under the root dict.
    fn arrays(&self, root: Value) -> Result<Vec<NumpyArray<'a>>> {
        match self.obj(root) {
            Some(Obj::BigInt(b)) if *b == TORCH_LEGACY_MAGIC => {
                return Err(PickleError::TorchLegacy)
            }
            Some(Obj::Dict(_)) => {}
            _ => {
                return Err(PickleError::Content(format!(
                    "the pickle holds an object of type {}, not a dict of numpy arrays",
                    self.type_name(root)
                )))
            }
        }
        let mut walk = Walk {
            m: self,
            out: Vec::new(),
            path: Vec::new(),
            visits: 0,
            budget: self.input.len().saturating_mul(4).saturating_add(1 << 20),
        };
        walk.value(root, 0, None)?;
        if walk.out.is_empty() {
            return Err(PickleError::Content(
                "the pickle holds no numpy arrays".into(),
            ));
        }
        Ok(walk.out)
    }
}

/// The walk that names arrays: dict keys and list indices joined with ".".
struct Walk<'m, 'a> {
    m: &'m Machine<'a>,
    out: Vec<NumpyArray<'a>>,
    path: Vec<String>,
    visits: usize,
    /// Bytes the named arrays may still take: an array reached under several names is
    /// copied for each.
    budget: usize,
}

impl<'a> Walk<'_, 'a> {
    /// `unnamed`: the type of a dict key on the way that gives no name (a tuple, None...):
    /// fine for metadata, an error for an array.
    fn value(&mut self, v: Value, depth: usize, unnamed: Option<&'static str>) -> Result<()> {
        self.visits += 1;
        if self.visits > MAX_VISITS {
            return Err(PickleError::Limit(format!(
                "more than {MAX_VISITS} values to visit (shared references?)"
            )));
        }
        if depth > MAX_DEPTH {
            return Err(PickleError::Limit(format!(
                "containers nested more than {MAX_DEPTH} deep (or holding themselves)"
            )));
        }
        let m = self.m;
        let Some(obj) = m.obj(v) else { return Ok(()) };
        match obj {
            Obj::Dict(pairs) => {
                for &(k, item) in pairs {
                    let key = match k {
                        Value::Int(i) => Some(i.to_string()),
                        _ => m.text_of(k).map(Cow::into_owned),
                    };
                    match key {
                        Some(key) => {
                            self.path.push(key);
                            self.value(item, depth + 1, unnamed)?;
                            self.path.pop();
                        }
                        None => self.value(item, depth + 1, Some(m.type_name(k)))?,
                    }
                }
            }
            Obj::List(items) | Obj::Tuple(items) => {
                for (i, &item) in items.iter().enumerate() {
                    self.path.push(i.to_string());
                    self.value(item, depth + 1, unnamed)?;
                    self.path.pop();
                }
            }
            Obj::Array(a) => {
                let name = self.name(unnamed)?;
                let data = match m.objs.get(a.data) {
                    Some(Obj::Bytes(Cow::Borrowed(b))) => Cow::Borrowed(*b),
                    Some(Obj::Bytes(Cow::Owned(b))) => Cow::Owned(b.clone()),
                    _ => {
                        return Err(PickleError::Content(format!(
                            "array \"{name}\" has no data"
                        )))
                    }
                };
                self.budget = self.budget.checked_sub(data.len()).ok_or_else(|| {
                    PickleError::Limit(
                        "its arrays, counted under each of their names, exceed 4x the file's size"
                            .into(),
                    )
                })?;
                let size = a.dtype.size();
                let swap = a.big_endian && size > 1;
                let data = if swap || (a.fortran && a.shape.len() > 1) {
                    Cow::Owned(c_order_le(&data, size, &a.shape, a.fortran, swap))
                } else {
                    data
                };
                self.out.push(NumpyArray {
                    name,
                    dtype: a.dtype,
                    shape: a.shape.clone(),
                    data,
                });
            }
            Obj::BadArray(reason) => {
                let name = self.name(unnamed)?;
                return Err(PickleError::Content(format!("array \"{name}\": {reason}")));
            }
            Obj::ArrayStub => {
                let name = self.name(unnamed)?;
                return Err(PickleError::Content(format!(
                    "array \"{name}\" was never given its data (no BUILD)"
                )));
            }
            _ => {}
        }
        Ok(())
    }

    fn name(&self, unnamed: Option<&'static str>) -> Result<String> {
        match unnamed {
            Some(key) => Err(PickleError::Content(format!(
                "an array under \"{}\" sits under a dict key of type {key}, which gives it no name",
                self.path.join(".")
            ))),
            None => Ok(self.path.join(".")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Protocol 2 bytes of `{"w": <array>}` where the array is built from the given dtype
    /// name, byte order, shape, Fortran flag and data.
    fn one_array(dtype: &str, order: &str, shape: &[u8], fortran: bool, data: &[u8]) -> Vec<u8> {
        let mut p = b"\x80\x02}X\x01\x00\x00\x00w".to_vec();
        p.extend_from_slice(
            b"cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\nK\x00\x85U\x01b\x87R",
        );
        p.extend_from_slice(b"(K\x01(");
        for &d in shape {
            p.extend_from_slice(&[b'K', d]);
        }
        p.extend_from_slice(b"tcnumpy\ndtype\n");
        p.push(b'U');
        p.push(dtype.len() as u8);
        p.extend_from_slice(dtype.as_bytes());
        p.extend_from_slice(b"\x89\x88\x87R(K\x03U\x01");
        p.extend_from_slice(order.as_bytes());
        p.extend_from_slice(b"NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tb");
        p.push(if fortran { 0x88 } else { 0x89 });
        p.push(b'B');
        p.extend_from_slice(&(data.len() as u32).to_le_bytes());
        p.extend_from_slice(data);
        p.extend_from_slice(b"tbs.");
        p
    }

    fn err(bytes: &[u8]) -> String {
        read_arrays(bytes).unwrap_err().to_string()
    }

    #[test]
    fn fortran_and_big_endian_arrays_come_out_in_c_order_little_endian() {
        // 2x3 big-endian i2 in Fortran order: columns (0,3) (1,4) (2,5).
        let data: Vec<u8> = [0i16, 3, 1, 4, 2, 5]
            .iter()
            .flat_map(|v| v.to_be_bytes())
            .collect();
        let p = one_array("i2", ">", &[2, 3], true, &data);
        let a = read_arrays(&p).unwrap();
        assert_eq!(a.len(), 1);
        assert_eq!((a[0].name.as_str(), a[0].dtype), ("w", Dtype::I16));
        assert_eq!(a[0].shape, [2, 3]);
        let want: Vec<u8> = (0i16..6).flat_map(|v| v.to_le_bytes()).collect();
        assert_eq!(&a[0].data[..], &want[..]);
        // 3-d Fortran: element (i, j, k) stored at i + 2j + 4k.
        let data: Vec<u8> = (0u8..8).collect();
        let p = one_array("u1", "|", &[2, 2, 2], true, &data);
        let a = read_arrays(&p).unwrap();
        assert_eq!(&a[0].data[..], &[0, 4, 2, 6, 1, 5, 3, 7]);
        // Already C order and little-endian: borrowed from the input, not copied.
        let p = one_array("f4", "<", &[1], false, &1.5f32.to_le_bytes());
        assert!(matches!(read_arrays(&p).unwrap()[0].data, Cow::Borrowed(_)));
    }

    /// OrderedDicts as Python 3 pickles them (`OrderedDict()` then SETITEMS) and as Python 2
    /// did (`OrderedDict([[key, value], ...])`).
    #[test]
    fn ordered_dicts_of_both_pythons() {
        let p = one_array("f4", "<", &[1], false, &2.0f32.to_le_bytes());
        let (key, body) = (&p[3..9], &p[9..p.len() - 2]);
        let mut py3 = b"\x80\x02ccollections\nOrderedDict\n)R".to_vec();
        py3.extend_from_slice(key);
        py3.extend_from_slice(body);
        py3.extend_from_slice(b"s.");
        let mut py2 = b"\x80\x02ccollections\nOrderedDict\n](".to_vec();
        py2.extend_from_slice(key);
        py2.extend_from_slice(body);
        py2.extend_from_slice(b"la\x85R.");
        for bytes in [py3, py2] {
            let a = read_arrays(&bytes).unwrap();
            assert_eq!(
                (a[0].name.as_str(), &a[0].data[..]),
                ("w", &2.0f32.to_le_bytes()[..])
            );
        }
    }

    #[test]
    fn latin1_text_becomes_the_bytes_it_stands_for() {
        let all: String = (0u8..=255).map(char::from).collect();
        assert_eq!(
            latin1(all.as_bytes()),
            Some((0u8..=255).collect::<Vec<u8>>())
        );
        assert_eq!(latin1("a\u{100}".as_bytes()), None);
        assert_eq!(latin1("\u{20ac}".as_bytes()), None);
        // Not UTF-8: a lone continuation byte, a cut-off character, an overlong encoding.
        for bad in [&b"a\x80"[..], b"\xc3", b"\xc1\x81", b"\xc3\xc3\xa9"] {
            assert_eq!(latin1(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn refuses_globals_outside_the_allow_list_by_name() {
        for (module, name) in [
            ("os", "system"),
            ("builtins", "eval"),
            ("posix", "system"),
            ("torch._utils", "_rebuild_tensor_v2"),
            ("numpy", "load"),
            ("numpy.core.multiarray", "_reconstruct_evil"),
        ] {
            let mut p = b"\x80\x02c".to_vec();
            p.extend_from_slice(format!("{module}\n{name}\n").as_bytes());
            p.extend_from_slice(b"X\x02\x00\x00\x00ls\x85R.");
            let e = read_arrays(&p).unwrap_err();
            assert_eq!(e.is_torch(), module == "torch._utils", "{module}.{name}");
            assert!(
                e.to_string()
                    .starts_with(&format!("refused global {module}.{name} (at offset 2)")),
                "{e}"
            );
        }
        // The same by STACK_GLOBAL (protocol 4).
        let p = b"\x80\x04\x8c\x08builtins\x8c\x04exec\x93.";
        assert!(
            err(p).starts_with("refused global builtins.exec"),
            "{}",
            err(p)
        );
    }

    #[test]
    fn malformed_pickles_are_errors_naming_what_and_where() {
        assert_eq!(
            err(b"\x80\x02}q"),
            "the pickle ends at offset 4 before its STOP opcode (a truncated file?)"
        );
        assert_eq!(
            err(b"\x80\x02}Q."),
            "pickle opcode BINPERSID (0x51) at offset 3 is not supported by this reader of numpy-array pickles"
        );
        assert_eq!(
            err(b"\x80\x02}\xff."),
            "byte 0xff at offset 3 is not a pickle opcode"
        );
        assert!(err(b"\x80\x02s.").contains("stack is empty (at offset 2)"));
        assert!(err(b"\x80\x02h\x05.").contains("memo entry 5 was never stored"));
        assert!(err(b"\x80\x02}(K\x01t0s.").contains("stack is empty"));
        // Declared lengths beyond the input: no allocation, a clean error.
        assert!(err(b"\x80\x04\x8d\xff\xff\xff\xff\xff\xff\xff\xff.").contains("ends at offset"));
        assert!(err(b"\x80\x02T\xff\xff\xff\xff.").contains("negative length"));
        assert_eq!(
            err(b"\x80\x02K\x01."),
            "the pickle holds an object of type int, not a dict of numpy arrays"
        );
        assert_eq!(err(b"\x80\x02}."), "the pickle holds no numpy arrays");
        // A legacy torch.save file starts with its magic number.
        let mut legacy = b"\x80\x02\x8a\x0a".to_vec();
        legacy.extend_from_slice(&TORCH_LEGACY_MAGIC);
        legacy.push(b'.');
        assert!(read_arrays(&legacy).unwrap_err().is_torch());
    }

    #[test]
    fn array_shapes_are_checked_against_their_data() {
        let e = err(&one_array("f4", "<", &[2, 3], false, &[0u8; 20]));
        assert!(e.contains("needs 24 bytes, its data has 20"), "{e}");
        // A shape whose product overflows.
        let mut p = one_array("f8", "<", &[1], false, &[0u8; 8]);
        let at = p.windows(4).position(|w| w == b"(K\x01(").unwrap() + 4;
        let huge = b"J\xff\xff\xff\x7fJ\xff\xff\xff\x7fJ\xff\xff\xff\x7fJ\xff\xff\xff\x7f";
        p.splice(at..at + 2, huge.iter().copied());
        assert!(err(&p).contains("overflows"), "{}", err(&p));
        let e = err(&one_array("O8", "|", &[1], false, &[0u8; 8]));
        assert!(
            e.contains("array \"w\": it is an object array (dtype 'O')"),
            "{e}"
        );
        let e = err(&one_array("u4", "<", &[1], false, &[0u8; 4]));
        assert!(
            e.contains("array \"w\": numpy dtype 'u4' is not supported"),
            "{e}"
        );
    }

    #[test]
    fn shared_and_cyclic_references_are_bounded() {
        // A list that holds itself: l = []; l.append(l).
        let e = err(b"\x80\x02}X\x01\x00\x00\x00l]q\x00h\x00as.");
        assert!(e.contains("nested more than 64 deep"), "{e}");
        // 40 levels of [x, x] doubling: 2^40 paths to walk.
        let mut p = b"\x80\x02}X\x01\x00\x00\x00lK\x00".to_vec();
        for _ in 0..40 {
            p.extend_from_slice(b"q\x00h\x00\x86");
        }
        p.extend_from_slice(b"s.");
        let e = err(&p);
        assert!(e.contains("values to visit"), "{e}");
    }
}
