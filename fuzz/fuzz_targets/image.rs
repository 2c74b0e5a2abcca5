//! The image decoders as the engine wraps them (`plugin_io::image_source::decode_image`: PNG
//! and JPEG, with the size limits): an RGB image of the size it declares or a clean error,
//! never a panic. The same bytes also go through `engine eval pq`'s own PNG row reader
//! (`plugin_io::pq::panoptic_ids`), whose ids must be those of the decoded RGB wherever both
//! read the file.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let decoded = plugin_io::image_source::decode_image(data, "fuzz");
    if let Ok(t) = &decoded {
        let s = t.shape();
        assert!(s.len() == 3 && s[2] == 3, "decoded shape {s:?}");
        assert_eq!(t.as_slice::<u8>().map(<[u8]>::len), Ok(s[0] * s[1] * 3));
    }
    let ids = plugin_io::pq::panoptic_ids(data, std::path::Path::new("fuzz"));
    if let (Ok(t), Ok(((h, w), ids))) = (&decoded, &ids) {
        assert_eq!(t.shape()[..2], [*h, *w]);
        let rgb = t.as_slice::<u8>().expect("u8 image");
        let want = rgb
            .chunks_exact(3)
            .map(|p| u32::from(p[0]) | u32::from(p[1]) << 8 | u32::from(p[2]) << 16);
        assert!(want.eq(ids.iter().copied()), "ids differ from the decoded RGB");
    }
});
