//! The image decoders as the engine wraps them (`plugin_io::image_source::decode_image`: PNG
//! and JPEG, with the size limits): an RGB image of the size it declares or a clean error,
//! never a panic.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(t) = plugin_io::image_source::decode_image(data, "fuzz") {
        let s = t.shape();
        assert!(s.len() == 3 && s[2] == 3, "decoded shape {s:?}");
        assert_eq!(t.as_slice::<u8>().map(<[u8]>::len), Ok(s[0] * s[1] * 3));
    }
});
