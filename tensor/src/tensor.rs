//! `Tensor`: a dtype, a shape and shared, contiguous (row-major) storage.
//!
//! Cloning a tensor clones an `Arc`, never the data, so fan-out in the engine and hand-over
//! across the plugin ABI are zero-copy. Storage is either owned by Rust (a typed `Vec`) or
//! foreign (a buffer owned by another library, released through a callback when the last
//! clone drops), which is how DLPack tensors from plugins are held without copying.

use std::fmt;
use std::sync::Arc;

use half::f16;
#[cfg(feature = "ndarray")]
use ndarray::{ArrayViewD, IxDyn};

use crate::device::Device;

/// Element type of a tensor.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DType {
    F32,
    F16,
    U8,
    I32,
    I64,
    Bool,
}

impl DType {
    pub const ALL: [DType; 6] = [
        DType::F32,
        DType::F16,
        DType::U8,
        DType::I32,
        DType::I64,
        DType::Bool,
    ];

    /// Size of one element in bytes.
    /// The dtype's code in the plugin ABI (`EngineDType` in `engine_plugin.h`; 0 there means
    /// "any dtype"). Fixed forever: a test pins every value.
    pub fn abi_code(self) -> u32 {
        match self {
            DType::F32 => 1,
            DType::F16 => 2,
            DType::U8 => 3,
            DType::I32 => 4,
            DType::I64 => 5,
            DType::Bool => 6,
        }
    }

    /// The dtype of an ABI code ([`DType::abi_code`]); `None` for 0 and unknown codes.
    pub fn from_abi_code(code: u32) -> Option<DType> {
        DType::ALL.into_iter().find(|d| d.abi_code() == code)
    }

    pub fn size(self) -> usize {
        match self {
            DType::F32 | DType::I32 => 4,
            DType::F16 => 2,
            DType::U8 | DType::Bool => 1,
            DType::I64 => 8,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            DType::F32 => "f32",
            DType::F16 => "f16",
            DType::U8 => "u8",
            DType::I32 => "i32",
            DType::I64 => "i64",
            DType::Bool => "bool",
        }
    }

    pub fn parse(s: &str) -> Option<DType> {
        DType::ALL.into_iter().find(|d| d.name() == s)
    }
}

impl fmt::Display for DType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Errors of tensor construction and access.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum TensorError {
    #[error("shape {shape:?} holds {expected} elements but {got} were given")]
    LengthMismatch {
        shape: Vec<usize>,
        expected: usize,
        got: usize,
    },
    #[error("tensor has dtype {actual}, expected {expected}")]
    DType { expected: DType, actual: DType },
    #[error("foreign buffer at {ptr:#x} is not aligned to {align} bytes for dtype {dtype}")]
    Misaligned {
        ptr: usize,
        align: usize,
        dtype: DType,
    },
    #[error("foreign bool tensor holds the byte {0}, which is neither 0 nor 1")]
    InvalidBool(u8),
    #[error("shape {0:?} overflows the address space")]
    Overflow(Vec<usize>),
    #[error("row {row} is out of range for a tensor of shape {shape:?}")]
    RowOutOfRange { row: usize, shape: Vec<usize> },
}

/// Rust types that can be tensor elements.
pub trait Element: Copy + Send + Sync + 'static + sealed::Sealed {
    const DTYPE: DType;
    #[doc(hidden)]
    fn slice(buf: &Buffer) -> Option<&[Self]>;
    #[doc(hidden)]
    fn wrap(v: Vec<Self>) -> Buffer;
}

mod sealed {
    pub trait Sealed {}
}

/// Rust-owned storage, one variant per dtype.
#[doc(hidden)]
pub enum Buffer {
    F32(Vec<f32>),
    F16(Vec<f16>),
    U8(Vec<u8>),
    I32(Vec<i32>),
    I64(Vec<i64>),
    Bool(Vec<bool>),
}

macro_rules! element {
    ($t:ty, $variant:ident) => {
        impl sealed::Sealed for $t {}
        impl Element for $t {
            const DTYPE: DType = DType::$variant;
            fn slice(buf: &Buffer) -> Option<&[Self]> {
                match buf {
                    Buffer::$variant(v) => Some(v),
                    _ => None,
                }
            }
            fn wrap(v: Vec<Self>) -> Buffer {
                Buffer::$variant(v)
            }
        }
    };
}
element!(f32, F32);
element!(f16, F16);
element!(u8, U8);
element!(i32, I32);
element!(i64, I64);
element!(bool, Bool);

/// A buffer owned by someone else (a plugin library, a DLPack producer). `release` runs once,
/// when the last tensor sharing it drops.
struct Foreign {
    ptr: *const u8,
    release: Option<Box<dyn FnOnce() + Send + Sync>>,
}

// SAFETY: the producer of a foreign buffer hands it over read-only for as long as `release`
// has not run (DLPack's contract); nothing writes through `ptr`.
unsafe impl Send for Foreign {}
unsafe impl Sync for Foreign {}

impl Drop for Foreign {
    fn drop(&mut self) {
        if let Some(release) = self.release.take() {
            release();
        }
    }
}

enum Storage {
    Owned(Buffer),
    Foreign(Foreign),
}

/// An n-dimensional array with shared storage. See the module documentation.
#[derive(Clone)]
pub struct Tensor {
    dtype: DType,
    shape: Vec<usize>,
    storage: Arc<Storage>,
}

fn numel_of(shape: &[usize]) -> Result<usize, TensorError> {
    shape
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .ok_or_else(|| TensorError::Overflow(shape.to_vec()))
}

impl Tensor {
    /// Wraps `data` (row-major) as a tensor of `shape`.
    pub fn from_vec<T: Element>(shape: &[usize], data: Vec<T>) -> Result<Tensor, TensorError> {
        let expected = numel_of(shape)?;
        if expected != data.len() {
            return Err(TensorError::LengthMismatch {
                shape: shape.to_vec(),
                expected,
                got: data.len(),
            });
        }
        Ok(Tensor {
            dtype: T::DTYPE,
            shape: shape.to_vec(),
            storage: Arc::new(Storage::Owned(T::wrap(data))),
        })
    }

    /// A scalar (0-d) tensor.
    pub fn scalar<T: Element>(value: T) -> Tensor {
        Tensor {
            dtype: T::DTYPE,
            shape: Vec::new(),
            storage: Arc::new(Storage::Owned(T::wrap(vec![value]))),
        }
    }

    /// A tensor of zeros (false for bool).
    pub fn zeros(dtype: DType, shape: &[usize]) -> Result<Tensor, TensorError> {
        let n = numel_of(shape)?;
        let buffer = match dtype {
            DType::F32 => Buffer::F32(vec![0.0; n]),
            DType::F16 => Buffer::F16(vec![f16::ZERO; n]),
            DType::U8 => Buffer::U8(vec![0; n]),
            DType::I32 => Buffer::I32(vec![0; n]),
            DType::I64 => Buffer::I64(vec![0; n]),
            DType::Bool => Buffer::Bool(vec![false; n]),
        };
        Ok(Tensor {
            dtype,
            shape: shape.to_vec(),
            storage: Arc::new(Storage::Owned(buffer)),
        })
    }

    /// Wraps a buffer owned elsewhere without copying it.
    ///
    /// # Safety
    /// `ptr` must point to `numel(shape) * dtype.size()` readable bytes laid out row-major,
    /// which stay valid and unmodified until `release` is called. For `Bool`, use
    /// [`Tensor::from_foreign`] only after the bytes were checked (this function checks them).
    pub unsafe fn from_foreign(
        dtype: DType,
        shape: &[usize],
        ptr: *const u8,
        release: Box<dyn FnOnce() + Send + Sync>,
    ) -> Result<Tensor, TensorError> {
        let foreign = Foreign {
            ptr,
            release: Some(release),
        };
        let n = numel_of(shape)?;
        if n.checked_mul(dtype.size()).is_none() {
            return Err(TensorError::Overflow(shape.to_vec()));
        }
        if n > 0 && !(ptr as usize).is_multiple_of(dtype.size()) {
            return Err(TensorError::Misaligned {
                ptr: ptr as usize,
                align: dtype.size(),
                dtype,
            });
        }
        if dtype == DType::Bool && n > 0 {
            // A Rust `bool` must be 0 or 1; a foreign producer may hand us other bytes.
            let bytes = std::slice::from_raw_parts(ptr, n);
            if let Some(&bad) = bytes.iter().find(|&&b| b > 1) {
                return Err(TensorError::InvalidBool(bad));
            }
        }
        Ok(Tensor {
            dtype,
            shape: shape.to_vec(),
            storage: Arc::new(Storage::Foreign(foreign)),
        })
    }

    pub fn dtype(&self) -> DType {
        self.dtype
    }

    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    pub fn ndim(&self) -> usize {
        self.shape.len()
    }

    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }

    pub fn nbytes(&self) -> usize {
        self.numel() * self.dtype.size()
    }

    /// Where the data lives. Only CPU storage exists until the CUDA backend lands.
    pub fn device(&self) -> Device {
        Device::Cpu
    }

    /// Address of the first element (for DLPack export and identity checks).
    pub fn data_ptr(&self) -> *const u8 {
        match &*self.storage {
            Storage::Owned(b) => match b {
                Buffer::F32(v) => v.as_ptr() as *const u8,
                Buffer::F16(v) => v.as_ptr() as *const u8,
                Buffer::U8(v) => v.as_ptr(),
                Buffer::I32(v) => v.as_ptr() as *const u8,
                Buffer::I64(v) => v.as_ptr() as *const u8,
                Buffer::Bool(v) => v.as_ptr() as *const u8,
            },
            Storage::Foreign(f) => f.ptr,
        }
    }

    /// True when both tensors share the same storage (no copy was made between them).
    pub fn shares_storage_with(&self, other: &Tensor) -> bool {
        Arc::ptr_eq(&self.storage, &other.storage)
    }

    /// The elements as a flat row-major slice.
    pub fn as_slice<T: Element>(&self) -> Result<&[T], TensorError> {
        if self.dtype != T::DTYPE {
            return Err(TensorError::DType {
                expected: T::DTYPE,
                actual: self.dtype,
            });
        }
        match &*self.storage {
            Storage::Owned(b) => T::slice(b).ok_or(TensorError::DType {
                expected: T::DTYPE,
                actual: self.dtype,
            }),
            Storage::Foreign(f) => {
                let n = self.numel();
                if n == 0 {
                    return Ok(&[]);
                }
                // SAFETY: checked at construction: `n` elements of this dtype, aligned,
                // valid until the storage (and so `self`) drops; bools were validated.
                Ok(unsafe { std::slice::from_raw_parts(f.ptr as *const T, n) })
            }
        }
    }

    /// An ndarray view of the data (feature `ndarray`, which `kernels` turns on; the plugin
    /// SDK leaves it off so that a custom head does not compile ndarray).
    #[cfg(feature = "ndarray")]
    pub fn view<T: Element>(&self) -> Result<ArrayViewD<'_, T>, TensorError> {
        let data = self.as_slice::<T>()?;
        ArrayViewD::from_shape(IxDyn(&self.shape), data).map_err(|_| TensorError::LengthMismatch {
            shape: self.shape.clone(),
            expected: self.numel(),
            got: data.len(),
        })
    }

    /// The same data under another shape with the same number of elements.
    pub fn reshape(&self, shape: &[usize]) -> Result<Tensor, TensorError> {
        let expected = numel_of(shape)?;
        if expected != self.numel() {
            return Err(TensorError::LengthMismatch {
                shape: shape.to_vec(),
                expected,
                got: self.numel(),
            });
        }
        Ok(Tensor {
            dtype: self.dtype,
            shape: shape.to_vec(),
            storage: self.storage.clone(),
        })
    }

    /// "f32[2, 3]"
    /// The rows `rows` of the first dimension, in that order (rows may repeat): selects or
    /// reorders per-instance tensors. A scalar has no rows.
    pub fn gather_rows(&self, rows: &[usize]) -> Result<Tensor, TensorError> {
        fn gather<T: Element>(t: &Tensor, rows: &[usize]) -> Result<Tensor, TensorError> {
            let data = t.as_slice::<T>()?;
            let n = t.shape().first().copied().unwrap_or(0);
            let row = t.shape().iter().skip(1).product::<usize>();
            let mut out = Vec::with_capacity(rows.len() * row);
            for &r in rows {
                if r >= n {
                    return Err(TensorError::RowOutOfRange {
                        row: r,
                        shape: t.shape().to_vec(),
                    });
                }
                out.extend_from_slice(&data[r * row..(r + 1) * row]);
            }
            let mut shape = t.shape().to_vec();
            if let Some(first) = shape.first_mut() {
                *first = rows.len();
            }
            Tensor::from_vec(&shape, out)
        }
        if self.ndim() == 0 {
            return match rows.first() {
                Some(&row) => Err(TensorError::RowOutOfRange {
                    row,
                    shape: Vec::new(),
                }),
                None => Tensor::zeros(self.dtype, &[0]),
            };
        }
        match self.dtype {
            DType::F32 => gather::<f32>(self, rows),
            DType::F16 => gather::<f16>(self, rows),
            DType::U8 => gather::<u8>(self, rows),
            DType::I32 => gather::<i32>(self, rows),
            DType::I64 => gather::<i64>(self, rows),
            DType::Bool => gather::<bool>(self, rows),
        }
    }

    pub fn describe(&self) -> String {
        format!("{}{:?}", self.dtype, self.shape)
    }
}

impl fmt::Debug for Tensor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Tensor({})", self.describe())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gather_rows_selects_and_reorders() {
        let t = Tensor::from_vec(&[3, 2], vec![0i64, 1, 10, 11, 20, 21]).unwrap();
        let g = t.gather_rows(&[2, 0, 2]).unwrap();
        assert_eq!(g.shape(), &[3, 2]);
        assert_eq!(g.as_slice::<i64>().unwrap(), &[20, 21, 0, 1, 20, 21]);
        assert_eq!(t.gather_rows(&[]).unwrap().shape(), &[0, 2]);
        assert_eq!(
            t.gather_rows(&[3]).unwrap_err().to_string(),
            "row 3 is out of range for a tensor of shape [3, 2]"
        );
        let b = Tensor::from_vec(&[2], vec![true, false]).unwrap();
        assert_eq!(
            b.gather_rows(&[1]).unwrap().as_slice::<bool>().unwrap(),
            &[false]
        );
    }

    #[test]
    fn abi_codes_are_pinned() {
        // engine_plugin.h's ENGINE_DTYPE_* values; changing one breaks every built plugin.
        let codes: Vec<(DType, u32)> = DType::ALL.iter().map(|d| (*d, d.abi_code())).collect();
        assert_eq!(
            codes,
            [
                (DType::F32, 1),
                (DType::F16, 2),
                (DType::U8, 3),
                (DType::I32, 4),
                (DType::I64, 5),
                (DType::Bool, 6)
            ]
        );
        for d in DType::ALL {
            assert_eq!(DType::from_abi_code(d.abi_code()), Some(d));
        }
        assert_eq!(DType::from_abi_code(0), None);
        assert_eq!(DType::from_abi_code(7), None);
    }
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn from_vec_checks_length() {
        let err = Tensor::from_vec(&[2, 3], vec![1.0f32; 5]).unwrap_err();
        assert_eq!(
            err,
            TensorError::LengthMismatch {
                shape: vec![2, 3],
                expected: 6,
                got: 5
            }
        );
        let t = Tensor::from_vec(&[2, 3], vec![1.0f32; 6]).unwrap();
        assert_eq!(t.describe(), "f32[2, 3]");
        #[cfg(feature = "ndarray")]
        assert_eq!(t.view::<f32>().unwrap()[[1, 2]], 1.0);
    }

    #[test]
    fn wrong_dtype_is_an_error() {
        let t = Tensor::from_vec(&[2], vec![1u8, 2]).unwrap();
        assert!(matches!(
            t.as_slice::<f32>(),
            Err(TensorError::DType {
                expected: DType::F32,
                actual: DType::U8
            })
        ));
    }

    #[test]
    fn clones_share_storage_and_reshape_does_not_copy() {
        let t = Tensor::from_vec(&[4], vec![1i32, 2, 3, 4]).unwrap();
        let u = t.clone();
        let r = t.reshape(&[2, 2]).unwrap();
        assert!(t.shares_storage_with(&u) && t.shares_storage_with(&r));
        #[cfg(feature = "ndarray")]
        assert_eq!(r.view::<i32>().unwrap()[[1, 0]], 3);
        assert!(t.reshape(&[3]).is_err());
    }

    #[test]
    fn foreign_buffer_is_released_once_after_last_clone() {
        static RELEASED: AtomicUsize = AtomicUsize::new(0);
        let data: &'static [f32] = Box::leak(vec![1.0f32, 2.0, 3.0].into_boxed_slice());
        let t = unsafe {
            Tensor::from_foreign(
                DType::F32,
                &[3],
                data.as_ptr() as *const u8,
                Box::new(|| {
                    RELEASED.fetch_add(1, Ordering::SeqCst);
                }),
            )
        }
        .unwrap();
        let c = t.clone();
        assert_eq!(c.as_slice::<f32>().unwrap(), &[1.0, 2.0, 3.0]);
        drop(t);
        assert_eq!(RELEASED.load(Ordering::SeqCst), 0);
        drop(c);
        assert_eq!(RELEASED.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn foreign_bool_bytes_are_validated() {
        let bytes: &'static [u8] = Box::leak(vec![0u8, 1, 7].into_boxed_slice());
        let err =
            unsafe { Tensor::from_foreign(DType::Bool, &[3], bytes.as_ptr(), Box::new(|| {})) }
                .unwrap_err();
        assert_eq!(err, TensorError::InvalidBool(7));
    }

    #[test]
    fn overflowing_shape_is_an_error() {
        assert!(matches!(
            Tensor::zeros(DType::F32, &[usize::MAX, 2]),
            Err(TensorError::Overflow(_))
        ));
    }
}
