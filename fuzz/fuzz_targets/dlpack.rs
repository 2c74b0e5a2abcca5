//! The host's import of a tensor a plugin returns through the C ABI
//! (`plugin_sdk::abi::import_tensor`, what the plugin host calls on every output): a
//! `DLManagedTensorVersioned` built from the input (version, device, dtype, ndim, shape,
//! strides, byte offset, null or non-null data) as a hostile or broken plugin could return
//! it. Every pointer in the struct is valid or null (a plugin handing wild pointers can only
//! be isolated in another process, docs/PLUGINS.md); what is fuzzed is the host's checking of
//! the fields. A tensor whose metadata agrees with its shape, or a clean error, never a
//! panic; the deleter runs exactly once either way.
#![no_main]

use std::ffi::c_void;
use std::sync::atomic::{AtomicUsize, Ordering};

use plugin_sdk::abi::{
    import_tensor, DLDataType, DLDevice, DLManagedTensorVersioned, DLPackVersion, DLTensor,
};

static DELETED: AtomicUsize = AtomicUsize::new(0);

unsafe extern "C" fn deleter(_: *mut DLManagedTensorVersioned) {
    DELETED.fetch_add(1, Ordering::SeqCst);
}

/// Little-endian fields read off the input, zero past its end.
struct Fields<'a>(&'a [u8]);

impl Fields<'_> {
    fn bytes<const N: usize>(&mut self) -> [u8; N] {
        let mut out = [0u8; N];
        let n = N.min(self.0.len());
        out[..n].copy_from_slice(&self.0[..n]);
        self.0 = &self.0[n..];
        out
    }
    fn u8(&mut self) -> u8 {
        self.bytes::<1>()[0]
    }
    fn i32(&mut self) -> i32 {
        i32::from_le_bytes(self.bytes())
    }
    fn i64(&mut self) -> i64 {
        i64::from_le_bytes(self.bytes())
    }
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let mut f = Fields(data);
    let flags = f.u8();
    let major = u32::from(f.u8() % 3);
    let device_type = i32::from(f.u8() % 4);
    let dtype = DLDataType {
        code: f.u8() % 8,
        bits: f.u8(),
        lanes: u16::from_le_bytes(f.bytes()),
    };
    let ndim = f.i32() % 12;
    let mut shape = [0i64; 8];
    let mut strides = [0i64; 8];
    for d in &mut shape {
        // Mostly small dimensions, sometimes anything.
        let v = f.i64();
        *d = if v & 0x100 == 0 { v & 7 } else { v >> 9 };
    }
    for s in &mut strides {
        let v = f.i64();
        *s = if v & 0x100 == 0 { v & 15 } else { v >> 9 };
    }
    let byte_offset = u64::from(f.u8() % 16);
    let buffer = vec![0u8; 64 + f.u8() as usize];
    let before = DELETED.load(Ordering::SeqCst);
    let managed = Box::into_raw(Box::new(DLManagedTensorVersioned {
        version: DLPackVersion { major, minor: 1 },
        manager_ctx: std::ptr::null_mut(),
        deleter: Some(deleter),
        flags: 0,
        dl_tensor: DLTensor {
            data: if flags & 1 == 0 {
                buffer.as_ptr() as *mut c_void
            } else {
                std::ptr::null_mut()
            },
            device: DLDevice {
                device_type,
                device_id: 0,
            },
            ndim,
            dtype,
            shape: if flags & 2 == 0 {
                shape.as_mut_ptr()
            } else {
                std::ptr::null_mut()
            },
            strides: if flags & 4 == 0 {
                strides.as_mut_ptr()
            } else {
                std::ptr::null_mut()
            },
            byte_offset,
        },
    }));
    // SAFETY: `managed` is a valid struct whose pointers are null or point to buffers of at
    // least 8 dimensions (the most the host reads) that outlive the call; ownership passes
    // to `import_tensor`, which calls the deleter.
    let imported = unsafe { import_tensor(managed, None) };
    if let Ok(t) = &imported {
        // Only what the plugin declared: its dimensions, on the CPU.
        let declared: Vec<usize> = shape[..ndim.max(0) as usize]
            .iter()
            .map(|&d| d as usize)
            .collect();
        assert_eq!(t.shape(), declared.as_slice(), "{}", t.describe());
        assert_eq!(device_type, 1);
    }
    drop(imported);
    assert_eq!(
        DELETED.load(Ordering::SeqCst),
        before + 1,
        "the deleter runs once"
    );
    // SAFETY: the struct was allocated above with Box::into_raw and the deleter (a counter)
    // did not free it.
    drop(unsafe { Box::from_raw(managed) });
    drop(buffer);
});
