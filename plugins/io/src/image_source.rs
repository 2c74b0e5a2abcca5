//! `image_source`: reads JPEG and PNG files, one per frame, as RGB u8 images.

use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use plugin_sdk::{
    DType, FrameInfo, Inputs, Node, NodeError, NodeKind, NodeSpec, Outputs, ParamSpec, ParamType,
    Params, PortKind, PortSpec, Tensor, Value,
};
use zune_jpeg::zune_core::colorspace::ColorSpace;
use zune_jpeg::zune_core::options::DecoderOptions;
use zune_jpeg::JpegDecoder;

use crate::quoted;

/// Largest accepted width or height of a decoded image.
pub const MAX_SIDE: usize = 30_000;
/// Largest accepted number of pixels of a decoded image (2^28, 768 MiB as RGB).
pub const MAX_PIXELS: usize = 1 << 28;

const JPEG_MAGIC: &[u8] = &[0xFF, 0xD8, 0xFF];
const PNG_MAGIC: &[u8] = &[0x89, b'P', b'N', b'G', 0x0D, 0x0A, 0x1A, 0x0A];

/// Extensions picked up when `path` is a directory.
const EXTENSIONS: [&str; 3] = ["jpg", "jpeg", "png"];

pub fn kind() -> NodeKind {
    let spec = NodeSpec::new(
        "image_source",
        "Reads JPEG and PNG files (a file, a glob pattern or a directory), one RGB image per frame, sorted by path",
    )
    .output(
        PortSpec::new("image", PortKind::Image, "the decoded image, RGB")
            .dtype(DType::U8)
            .shape("H,W,3"),
    )
    .param(ParamSpec::required(
        "path",
        ParamType::Path,
        "an image file, a glob pattern such as \"assets/*.jpg\", or a directory (its .jpg, .jpeg and .png files)",
    ));
    NodeKind::new(spec, |params| {
        Ok(Box::new(ImageSource::from_params(params)?) as Box<dyn Node>)
    })
}

/// The `image_source` node. Files are listed at creation and decoded lazily, one per frame.
#[derive(Debug)]
pub struct ImageSource {
    files: Vec<(PathBuf, Arc<str>)>,
    next: usize,
}

impl ImageSource {
    pub fn from_params(params: &Params) -> Result<ImageSource, NodeError> {
        let path = params.str("path")?;
        ImageSource::new(list_files(path)?)
    }

    /// A source over these files, in this order.
    pub fn new(files: Vec<PathBuf>) -> Result<ImageSource, NodeError> {
        let files = files
            .into_iter()
            .map(|p| {
                let name: Arc<str> = Arc::from(p.display().to_string());
                (p, name)
            })
            .collect();
        Ok(ImageSource { files, next: 0 })
    }

    /// The files this source reads, in order.
    pub fn files(&self) -> impl Iterator<Item = &Path> {
        self.files.iter().map(|(p, _)| p.as_path())
    }
}

impl Node for ImageSource {
    fn process(&mut self, _frame: &FrameInfo, _inputs: &Inputs) -> Result<Outputs, NodeError> {
        Err(NodeError::new(
            "image_source is a source and takes no inputs",
        ))
    }

    fn next_frame(&mut self, frame: &mut FrameInfo) -> Result<Option<Outputs>, NodeError> {
        let Some((path, name)) = self.files.get(self.next) else {
            return Ok(None);
        };
        self.next += 1;
        frame.source = name.clone();
        frame.timestamp_ns = now_ns();
        let image = read_image(path)?;
        let shape = image.shape();
        frame.height = u32::try_from(shape[0]).unwrap_or(u32::MAX);
        frame.width = u32::try_from(shape[1]).unwrap_or(u32::MAX);
        Ok(Some(Outputs::one("image", Value::image(image))))
    }
}

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

fn has_image_extension(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| EXTENSIONS.iter().any(|x| e.eq_ignore_ascii_case(x)))
}

/// The files `path` names, sorted: the file itself, the .jpg/.jpeg/.png files of a directory
/// (not recursive), or the files a glob pattern matches.
pub fn list_files(path: &str) -> Result<Vec<PathBuf>, NodeError> {
    list_matching(
        path,
        has_image_extension,
        |_| true,
        "an image file",
        "JPEG or PNG",
    )
}

/// The files `path` names, sorted: the file itself, the files of a directory (not recursive)
/// that `in_dir` accepts, or the files of a glob pattern that `in_glob` accepts. `one` names
/// a single file the source takes (for the error on a FIFO or device), `kinds` the kinds of
/// files it reads (for the error when none is found).
pub(crate) fn list_matching(
    path: &str,
    in_dir: impl Fn(&Path) -> bool,
    in_glob: impl Fn(&Path) -> bool,
    one: &str,
    kinds: &str,
) -> Result<Vec<PathBuf>, NodeError> {
    let p = Path::new(path);
    let mut files = if p.is_dir() {
        let entries = std::fs::read_dir(p)
            .map_err(|e| format!("cannot list directory {}: {e}", quoted(p)))?;
        let mut files = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| format!("cannot list directory {}: {e}", quoted(p)))?;
            let file = entry.path();
            if file.is_file() && in_dir(&file) {
                files.push(file);
            }
        }
        files
    } else if p.is_file() {
        vec![p.to_path_buf()]
    } else if path.contains(['*', '?', '[']) {
        let matches = glob::glob(path).map_err(|e| {
            format!("parameter \"path\": {path:?} is not a valid glob pattern: {e}")
        })?;
        let mut files = Vec::new();
        for m in matches {
            let file = m.map_err(|e| format!("cannot read {}: {}", quoted(e.path()), e.error()))?;
            if file.is_file() && in_glob(&file) {
                files.push(file);
            }
        }
        files
    } else if p.exists() {
        // A FIFO, a device or a socket: say what it is rather than "does not exist".
        let why = kernels::files::regular_file_len(p)
            .err()
            .map_or_else(|| "cannot be read".to_string(), |e| e.to_string());
        return Err(NodeError::new(format!(
            "{} {why}; give {one}, a directory or a glob",
            quoted(p)
        )));
    } else {
        return Err(NodeError::new(format!("file {} does not exist", quoted(p))));
    };
    if files.is_empty() {
        return Err(NodeError::new(format!(
            "path {} matches no {kinds} file",
            quoted(p)
        )));
    }
    files.sort();
    Ok(files)
}

/// Reads and decodes one file to RGB u8 [H, W, 3].
pub fn read_image(path: &Path) -> Result<Tensor, NodeError> {
    let bytes = kernels::files::read_regular(path)
        .map_err(|e| format!("cannot read {}: {e}", quoted(path)))?;
    decode_image(&bytes, &path.display().to_string())
}

/// The container format of an encoded image, from its magic bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Jpeg,
    Png,
}

impl Format {
    pub fn detect(bytes: &[u8]) -> Option<Format> {
        if bytes.starts_with(JPEG_MAGIC) {
            Some(Format::Jpeg)
        } else if bytes.starts_with(PNG_MAGIC) {
            Some(Format::Png)
        } else {
            None
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Format::Jpeg => "JPEG",
            Format::Png => "PNG",
        }
    }
}

/// Decodes JPEG or PNG bytes (format from the magic bytes) to RGB u8 [H, W, 3]: grayscale is
/// replicated, alpha dropped, palettes expanded, 16-bit samples reduced to their high byte.
/// `name` (usually the file path) appears in errors. Never panics on malformed input.
pub fn decode_image(bytes: &[u8], name: &str) -> Result<Tensor, NodeError> {
    let format = Format::detect(bytes)
        .ok_or_else(|| format!("\"{name}\" is neither a JPEG nor a PNG file"))?;
    // The decoders return errors on malformed data; the unwind guard is a second line of
    // defence so that a decoder bug on hostile input fails the frame, not the process.
    let decoded = std::panic::catch_unwind(|| match format {
        Format::Jpeg => decode_jpeg(bytes),
        Format::Png => decode_png(bytes),
    })
    .unwrap_or_else(|_| Err("the decoder panicked".to_string()));
    let (h, w, rgb) =
        decoded.map_err(|e| format!("cannot decode \"{name}\" as {}: {e}", format.name()))?;
    Tensor::from_vec(&[h, w, 3], rgb)
        .map_err(|e| NodeError::new(format!("cannot decode \"{name}\": {e}")))
}

pub(crate) fn check_size(w: usize, h: usize) -> Result<(), String> {
    if w == 0 || h == 0 {
        return Err(format!("image has no pixels ({w}x{h})"));
    }
    if w > MAX_SIDE || h > MAX_SIDE {
        return Err(format!(
            "image is {w}x{h} pixels, larger than the limit of {MAX_SIDE} pixels per side"
        ));
    }
    if w * h > MAX_PIXELS {
        return Err(format!(
            "image is {w}x{h} = {} pixels, more than the limit of {MAX_PIXELS}",
            w * h
        ));
    }
    Ok(())
}

fn decode_jpeg(bytes: &[u8]) -> Result<(usize, usize, Vec<u8>), String> {
    let options = DecoderOptions::default()
        .set_max_width(MAX_SIDE)
        .set_max_height(MAX_SIDE)
        .jpeg_set_out_colorspace(ColorSpace::RGB);
    let mut decoder = JpegDecoder::new_with_options(Cursor::new(bytes), options);
    decoder.decode_headers().map_err(|e| e.to_string())?;
    let info = decoder
        .info()
        .ok_or_else(|| "no image header".to_string())?;
    let (w, h) = (usize::from(info.width), usize::from(info.height));
    check_size(w, h)?;
    if decoder.output_colorspace() != Some(ColorSpace::RGB) {
        return Err(format!(
            "unsupported output colour space {:?}",
            decoder.output_colorspace()
        ));
    }
    // zune-jpeg (like libjpeg) fills a truncated image with gray and carries on; we would
    // rather fail the frame than pass a half-gray image down the pipeline.
    if !ends_after_last_scan(bytes) {
        return Err("the file is truncated (no end-of-image marker after the last scan)".into());
    }
    let mut rgb = vec![0u8; w * h * 3];
    decoder.decode_into(&mut rgb).map_err(|e| e.to_string())?;
    Ok((h, w, rgb))
}

/// Whether an end-of-image marker (FF D9) follows the last start-of-scan marker (FF DA).
/// Entropy-coded data cannot contain either (0xFF bytes in it are stuffed), so a file cut
/// anywhere after its first scan header fails this test, while trailing bytes after the end
/// of the image and embedded thumbnails (which come before the main image's scans) pass.
fn ends_after_last_scan(bytes: &[u8]) -> bool {
    let last_sos = bytes.windows(2).rposition(|w| w == [0xFF, 0xDA]);
    match last_sos {
        Some(i) => bytes[i..].windows(2).any(|w| w == [0xFF, 0xD9]),
        None => false,
    }
}

fn decode_png(bytes: &[u8]) -> Result<(usize, usize, Vec<u8>), String> {
    let mut decoder = png::Decoder::new(Cursor::new(bytes));
    decoder.set_transformations(png::Transformations::EXPAND | png::Transformations::STRIP_16);
    let header = decoder.read_header_info().map_err(|e| e.to_string())?;
    let (w, h) = (header.width as usize, header.height as usize);
    check_size(w, h)?;
    let mut reader = decoder.read_info().map_err(|e| e.to_string())?;
    let size = reader
        .output_buffer_size()
        .ok_or_else(|| "image size overflows".to_string())?;
    let mut buf = vec![0u8; size];
    let frame = reader.next_frame(&mut buf).map_err(|e| e.to_string())?;
    let (fw, fh) = (frame.width as usize, frame.height as usize);
    if (fw, fh) != (w, h) {
        return Err(format!(
            "first frame is {fw}x{fh} pixels but the image is {w}x{h}"
        ));
    }
    if frame.bit_depth != png::BitDepth::Eight {
        return Err(format!(
            "unexpected bit depth {:?} after expansion",
            frame.bit_depth
        ));
    }
    let channels = match frame.color_type {
        png::ColorType::Grayscale => 1,
        png::ColorType::GrayscaleAlpha => 2,
        png::ColorType::Rgb => 3,
        png::ColorType::Rgba => 4,
        png::ColorType::Indexed => return Err("palette was not expanded".into()),
    };
    let line = frame.line_size;
    if line < w * channels || buf.len() < line * (h - 1) + w * channels {
        return Err("decoded buffer is smaller than the image".into());
    }
    let mut rgb = Vec::with_capacity(w * h * 3);
    for row in buf.chunks(line).take(h) {
        let row = &row[..w * channels];
        match channels {
            3 => rgb.extend_from_slice(row),
            4 => row
                .chunks_exact(4)
                .for_each(|p| rgb.extend_from_slice(&p[..3])),
            _ => row
                .chunks_exact(channels)
                .for_each(|p| rgb.extend_from_slice(&[p[0], p[0], p[0]])),
        }
    }
    Ok((h, w, rgb))
}

#[cfg(test)]
mod tests {
    use super::*;
    use plugin_sdk::ParamValue;
    use serde_json::Value as Json;

    fn fixture_dir() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/images")
    }

    fn expected() -> Json {
        let text = std::fs::read_to_string(fixture_dir().join("expected.json")).unwrap();
        serde_json::from_str(&text).unwrap()
    }

    #[test]
    fn decodes_fixtures_like_pillow() {
        let expected = expected();
        let images = expected["images"].as_object().unwrap();
        assert!(images.len() >= 10);
        for (name, want) in images {
            let t = read_image(&fixture_dir().join(name)).unwrap();
            let (h, w) = (
                want["height"].as_u64().unwrap() as usize,
                want["width"].as_u64().unwrap() as usize,
            );
            assert_eq!(t.shape(), [h, w, 3], "{name}");
            let got = t.as_slice::<u8>().unwrap();
            let want: Vec<u8> = want["rgb"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_u64().unwrap() as u8)
                .collect();
            let tolerance = if name.ends_with(".jpg") { 2 } else { 0 };
            for (i, (&g, &e)) in got.iter().zip(&want).enumerate() {
                assert!(
                    g.abs_diff(e) <= tolerance,
                    "{name}: sample {i} (y {}, x {}, c {}) is {g}, expected {e}",
                    i / (w * 3),
                    i / 3 % w,
                    i % 3
                );
            }
        }
    }

    fn encode_png(
        w: u32,
        h: u32,
        color: png::ColorType,
        depth: png::BitDepth,
        data: &[u8],
    ) -> Vec<u8> {
        let mut out = Vec::new();
        let mut enc = png::Encoder::new(&mut out, w, h);
        enc.set_color(color);
        enc.set_depth(depth);
        let mut writer = enc.write_header().unwrap();
        writer.write_image_data(data).unwrap();
        writer.finish().unwrap();
        out
    }

    #[test]
    fn decodes_png_encoded_in_test() {
        let rgba: Vec<u8> = (0..3 * 2 * 4).map(|i| (i * 10) as u8).collect();
        let bytes = encode_png(3, 2, png::ColorType::Rgba, png::BitDepth::Eight, &rgba);
        let t = decode_image(&bytes, "mem.png").unwrap();
        assert_eq!(t.shape(), [2, 3, 3]);
        let want: Vec<u8> = rgba.chunks(4).flat_map(|p| p[..3].to_vec()).collect();
        assert_eq!(t.as_slice::<u8>().unwrap(), want.as_slice());

        // 16-bit grayscale, big-endian samples: the high byte is kept.
        let g16 = [0x12u8, 0x34, 0xAB, 0xCD];
        let bytes = encode_png(
            2,
            1,
            png::ColorType::Grayscale,
            png::BitDepth::Sixteen,
            &g16,
        );
        let t = decode_image(&bytes, "mem16.png").unwrap();
        assert_eq!(
            t.as_slice::<u8>().unwrap(),
            &[0x12, 0x12, 0x12, 0xAB, 0xAB, 0xAB]
        );
    }

    #[test]
    fn format_comes_from_magic_bytes_not_the_name() {
        let rgb = [1u8, 2, 3];
        let bytes = encode_png(1, 1, png::ColorType::Rgb, png::BitDepth::Eight, &rgb);
        let t = decode_image(&bytes, "really_a_png.jpg").unwrap();
        assert_eq!(t.as_slice::<u8>().unwrap(), &rgb);
        let err = decode_image(b"GIF89a....", "x.png").unwrap_err();
        assert_eq!(err.message(), "\"x.png\" is neither a JPEG nor a PNG file");
        assert!(decode_image(b"", "empty.jpg").is_err());
    }

    #[test]
    fn truncated_and_corrupt_files_are_errors() {
        for name in ["rgb.jpg", "progressive.jpg", "rgb.png", "palette.png"] {
            let bytes = std::fs::read(fixture_dir().join(name)).unwrap();
            let format = if name.ends_with("jpg") { "JPEG" } else { "PNG" };
            // A JPEG missing only its last byte is cut in its end-of-image marker; a PNG missing
            // part of its IEND trailer still has all its pixels and decodes, as with libpng.
            let last = if format == "JPEG" {
                bytes.len() - 1
            } else {
                bytes.len() - 13
            };
            for cut in [10, 20, bytes.len() / 3, bytes.len() / 2, last] {
                let Err(err) = decode_image(&bytes[..cut], name) else {
                    panic!("{name} cut at {cut} of {} decodes", bytes.len());
                };
                assert!(
                    err.message()
                        .starts_with(&format!("cannot decode \"{name}\" as {format}: ")),
                    "{name} cut at {cut}: {err}"
                );
            }
            // Flipped bytes after the header: an error or some image, never a panic.
            let mut state = 0x9E37_79B9_7F4A_7C15u64;
            for _ in 0..200 {
                let mut b = bytes.clone();
                for _ in 0..4 {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    let i = 8 + (state as usize) % (b.len() - 8);
                    b[i] = (state >> 32) as u8;
                }
                if let Ok(t) = decode_image(&b, name) {
                    assert_eq!(t.ndim(), 3);
                }
            }
        }
    }

    #[test]
    fn oversized_images_are_refused() {
        // A PNG header claiming 40000 x 1 pixels.
        let mut bytes = encode_png(1, 1, png::ColorType::Rgb, png::BitDepth::Eight, &[0, 0, 0]);
        // IHDR data starts at byte 16: width (4 bytes), height (4 bytes); fix the CRC after.
        bytes[16..20].copy_from_slice(&40_000u32.to_be_bytes());
        let crc = crc32(&bytes[12..29]);
        bytes[29..33].copy_from_slice(&crc.to_be_bytes());
        let err = decode_image(&bytes, "huge.png").unwrap_err();
        assert!(
            err.message().contains("limit of 30000 pixels per side"),
            "{err}"
        );
        assert!(check_size(20_000, 20_000)
            .unwrap_err()
            .contains("more than the limit"));
        assert!(check_size(30_000, 1).is_ok());
    }

    fn crc32(data: &[u8]) -> u32 {
        let mut crc = !0u32;
        for &b in data {
            crc ^= u32::from(b);
            for _ in 0..8 {
                crc = if crc & 1 != 0 {
                    (crc >> 1) ^ 0xEDB8_8320
                } else {
                    crc >> 1
                };
            }
        }
        !crc
    }

    fn temp_dir(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "plugin-io-{tag}-{}-{}",
            std::process::id(),
            now_ns()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn lists_directories_globs_and_files() {
        let dir = temp_dir("list");
        let src = fixture_dir();
        for (from, to) in [
            ("rgb.png", "b.png"),
            ("rgb.jpg", "a.JPG"),
            ("gray.jpg", "c.jpeg"),
        ] {
            std::fs::copy(src.join(from), dir.join(to)).unwrap();
        }
        std::fs::write(dir.join("notes.txt"), "x").unwrap();
        std::fs::create_dir(dir.join("sub.png")).unwrap();

        let d = dir.display().to_string();
        let names = |files: Vec<PathBuf>| -> Vec<String> {
            files
                .iter()
                .map(|f| f.file_name().unwrap().to_string_lossy().into_owned())
                .collect()
        };
        assert_eq!(names(list_files(&d).unwrap()), ["a.JPG", "b.png", "c.jpeg"]);
        assert_eq!(names(list_files(&format!("{d}/*.png")).unwrap()), ["b.png"]);
        assert_eq!(names(list_files(&format!("{d}/b.png")).unwrap()), ["b.png"]);
        let err = list_files(&format!("{d}/*.gif")).unwrap_err();
        assert_eq!(
            err.message(),
            format!("path \"{d}/*.gif\" matches no JPEG or PNG file")
        );
        let err = list_files(&format!("{d}/missing.jpg")).unwrap_err();
        assert_eq!(
            err.message(),
            format!("file \"{d}/missing.jpg\" does not exist")
        );
        let empty = dir.join("sub.png");
        assert!(list_files(&empty.display().to_string())
            .unwrap_err()
            .message()
            .contains("matches no JPEG or PNG file"));

        // The node: one frame per file, in order, then end of stream.
        let params = Params::new().with("path", ParamValue::Str(d.clone()));
        let mut node = (kind().create)(&params).unwrap();
        let mut shapes = Vec::new();
        let mut frame = FrameInfo::default();
        while let Some(out) = node.next_frame(&mut frame).unwrap() {
            let v = out.get("image").unwrap();
            v.validate().unwrap();
            shapes.push(v.get("image").unwrap().shape().to_vec());
            assert_eq!((frame.width, frame.height), (8, 6));
            assert!(frame.source.ends_with(".png") || frame.source.to_lowercase().contains(".jp"));
            assert!(frame.timestamp_ns > 0);
        }
        assert_eq!(shapes, vec![vec![6, 8, 3]; 3]);
        assert!(node.next_frame(&mut frame).unwrap().is_none());

        // A corrupt file fails its frame with the file's name.
        std::fs::write(dir.join("d.jpg"), [0xFF, 0xD8, 0xFF, 0x00]).unwrap();
        let mut node = (kind().create)(&params).unwrap();
        let mut frame = FrameInfo::default();
        for _ in 0..3 {
            node.next_frame(&mut frame).unwrap();
        }
        let err = node.next_frame(&mut frame).unwrap_err();
        assert!(
            err.message()
                .starts_with(&format!("cannot decode \"{d}/d.jpg\" as JPEG: ")),
            "{err}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
