//! The rows of a non-interlaced 8-bit RGB or RGBA PNG, one at a time, for label maps.
//!
//! The png crate parses the chunks, checks their CRCs and inflates the image data
//! ([`png::StreamingDecoder`]); this module undoes the row filters itself. A panoptic PNG is
//! mostly flat regions, and there two cases of the Paeth filter (`a` left, `b` up, `c`
//! up-left of a byte) reduce to copies:
//!
//! - where `b == c`, the predictor is `a` (`|p - a| = |b - c| = 0` wins every tie);
//! - where `a == c`, it is `b` (`|p - b| = 0`, and `|p - a| = |b - c|`, which is not smaller
//!   unless `b == c == a`).
//!
//! So a block of zero residuals continues the row above wherever the current row already
//! matched it at the block's left, and repeats the pixel to its left wherever the row above
//! is flat. The png crate runs every Paeth byte through its scalar predictor, and that was a
//! third of `engine eval pq`'s time. Other rows and blocks take the byte-wise filters of the
//! PNG specification (section 9.2), which give the png crate's bytes exactly.

use png::{ColorType, Decoded, StreamingDecoder, UnfilterRegion};

use crate::byte_lanes::{with_lanes, Lanes};

/// The bytes the inflater must keep behind its output (deflate's window).
const LOOKBACK: usize = 32 * 1024;
/// The room the png crate's inflater asks for beyond what it has written.
const GROWTH: usize = 8 * 1024;

/// A row reader over the bytes of a PNG file.
pub(crate) struct PngRows<'a> {
    input: &'a [u8],
    decoder: StreamingDecoder,
    /// Inflated, still filtered scanlines (a filter byte, then `row_bytes`), from byte 0.
    inflated: Vec<u8>,
    region: UnfilterRegion,
    /// Where the next unread scanline starts in `inflated`.
    next: usize,
    /// The image data's end was seen: no more bytes will come.
    ended: bool,
    /// A row has been returned.
    started: bool,
    row_bytes: usize,
    bpp: usize,
    /// The last row returned (zeros before the first) and the one being made.
    prev: Vec<u8>,
    cur: Vec<u8>,
}

/// The size of the image a [`PngRows`] reads.
pub(crate) struct Header {
    pub(crate) width: usize,
    pub(crate) height: usize,
}

impl<'a> PngRows<'a> {
    /// Reads the header of `bytes`. `Ok(None)` when the PNG is interlaced, has another bit
    /// depth or a palette, or is grey (the caller decodes those whole); `Err` with the png
    /// crate's words when the header is malformed, and when the image is larger than
    /// [`check_size`](crate::image_source::check_size) allows.
    pub(crate) fn open(bytes: &'a [u8]) -> Result<Option<(Self, Header)>, String> {
        let mut decoder = StreamingDecoder::new();
        // The streaming decoder has no memory limit of its own, and a compressed ICC
        // profile or text chunk could inflate to gigabytes; neither is used.
        decoder.set_ignore_iccp_chunk(true);
        decoder.set_ignore_text_chunk(true);
        let mut input = bytes;
        while decoder.info().is_none() {
            if input.is_empty() {
                return Err("the file ends before its header".into());
            }
            let (consumed, _) = decoder.update(input, None).map_err(|e| e.to_string())?;
            if consumed == 0 {
                return Err("the header does not decode".into());
            }
            input = &input[consumed..];
        }
        let Some(info) = decoder.info() else {
            return Err("the header does not decode".into());
        };
        let bpp = match (info.color_type, info.bit_depth) {
            (ColorType::Rgb, png::BitDepth::Eight) => 3,
            (ColorType::Rgba, png::BitDepth::Eight) => 4,
            _ => return Ok(None),
        };
        if info.interlaced {
            return Ok(None);
        }
        let (width, height) = (info.width as usize, info.height as usize);
        crate::image_source::check_size(width, height)?;
        let row_bytes = width
            .checked_mul(bpp)
            .ok_or_else(|| format!("a row of {width} pixels overflows"))?;
        let capacity = LOOKBACK + GROWTH + 2 * (row_bytes + 1).max(64 * 1024);
        let rows = PngRows {
            input,
            decoder,
            inflated: spare_buffer(capacity),
            region: UnfilterRegion::default(),
            next: 0,
            ended: false,
            started: false,
            row_bytes,
            bpp,
            prev: vec![0; row_bytes],
            cur: vec![0; row_bytes],
        };
        Ok(Some((rows, Header { width, height })))
    }

    /// Bytes per pixel: 3 or 4.
    pub(crate) fn bpp(&self) -> usize {
        self.bpp
    }

    /// The next row's `width · bpp` bytes, and whether they repeat the row above (always
    /// false for the first row). Rows past the image's height are an error only when the
    /// data runs out: the caller stops at the height.
    pub(crate) fn next_row(&mut self) -> Result<(&[u8], bool), String> {
        let scanline = self.row_bytes + 1;
        while self.region.filled - self.next < scanline {
            self.inflate_more()?;
        }
        let line = &self.inflated[self.next..self.next + scanline];
        self.next += scanline;
        let repeats = unfilter(line[0], self.bpp, &line[1..], &self.prev, &mut self.cur)?;
        if !repeats {
            std::mem::swap(&mut self.prev, &mut self.cur);
        }
        let after_first = std::mem::replace(&mut self.started, true);
        Ok((&self.prev, repeats && after_first))
    }

    /// Reads the file to the end of its image data, so that a cut or corrupt file (a
    /// chunk's CRC) is an error even when every row has been read. What follows the last
    /// row is checked but not inflated (as the png crate's own reader skips it); a file that
    /// ends right after its last image data chunk, without IEND, is accepted, as libpng and
    /// PIL accept it.
    pub(crate) fn finish(&mut self) -> Result<(), String> {
        let (mut after_image_chunk, mut stalled) = (false, false);
        while !self.ended {
            if self.input.is_empty() && after_image_chunk {
                break;
            }
            let left = self.input.len();
            after_image_chunk = self.feed(false)?;
            if self.input.len() < left || self.ended {
                stalled = false;
            } else if std::mem::replace(&mut stalled, true) {
                return Err("the file's chunks do not decode".into());
            }
        }
        Ok(())
    }

    /// Inflates at least one more byte of image data, or fails.
    fn inflate_more(&mut self) -> Result<(), String> {
        if self.ended {
            return Err("the image data ends before the last row".into());
        }
        self.make_room();
        let before = self.region.filled;
        // Events other than image data (ancillary chunks, the next IDAT's header) move the
        // input on without output; two calls in a row that do neither mean a stuck decoder.
        let mut stalled = false;
        while self.region.filled == before && !self.ended {
            if self.feed(true)? {
                stalled = false;
            } else if std::mem::replace(&mut stalled, true) {
                return Err("the image data does not inflate".into());
            }
        }
        Ok(())
    }

    /// Leaves the inflater room to write: drops what is both read and behind its window, and
    /// grows the buffer if that is not enough.
    fn make_room(&mut self) {
        if self.region.filled + GROWTH <= self.inflated.len() {
            return;
        }
        let drop = self.region.available.min(self.next);
        self.inflated.copy_within(drop..self.region.filled, 0);
        self.region.available -= drop;
        self.region.filled -= drop;
        self.next -= drop;
        if self.region.filled + GROWTH > self.inflated.len() {
            let grown = self.region.filled + GROWTH + self.row_bytes + 1;
            self.inflated.resize(grown, 0);
        }
    }

    /// One step of the png crate's decoder, inflating the image data or (`inflate` false)
    /// skipping it. With `inflate`, whether the step read or wrote anything; without,
    /// whether it completed an image data chunk (its CRC checked).
    fn feed(&mut self, inflate: bool) -> Result<bool, String> {
        if self.input.is_empty() {
            return Err("the file ends inside its image data".into());
        }
        let before = self.region.filled;
        let mut buf = self.region.as_buf(&mut self.inflated);
        let (consumed, event) = self
            .decoder
            .update(self.input, inflate.then_some(&mut buf))
            .map_err(|e| e.to_string())?;
        self.input = &self.input[consumed..];
        if matches!(
            event,
            Decoded::ImageDataFlushed | Decoded::ChunkComplete(png::chunk::IEND)
        ) {
            self.ended = true;
            return Ok(true);
        }
        if !inflate {
            return Ok(matches!(event, Decoded::ChunkComplete(png::chunk::IDAT)));
        }
        Ok(consumed > 0 || self.region.filled > before)
    }
}

thread_local! {
    /// The inflate buffer of the last file this thread read: files come one after another,
    /// and a fresh buffer would be cleared first.
    static SPARE: std::cell::Cell<Vec<u8>> = const { std::cell::Cell::new(Vec::new()) };
}

/// A buffer of at least `len` bytes, of any contents.
fn spare_buffer(len: usize) -> Vec<u8> {
    let mut buffer = SPARE.take();
    if buffer.len() < len {
        buffer.resize(len, 0);
    }
    buffer
}

impl Drop for PngRows<'_> {
    fn drop(&mut self) {
        // A very wide image's buffer is not kept for the thread's life.
        if self.inflated.len() <= 1 << 20 {
            SPARE.set(std::mem::take(&mut self.inflated));
        }
    }
}

/// The Paeth predictor of the PNG specification, ties to `a`, then `b`.
#[inline(always)]
fn paeth(a: u8, b: u8, c: u8) -> u8 {
    let (ia, ib, ic) = (i16::from(a), i16::from(b), i16::from(c));
    let pa = (ib - ic).abs();
    let pb = (ia - ic).abs();
    let pc = (ia + ib - 2 * ic).abs();
    if pa <= pb && pa <= pc {
        a
    } else if pb <= pc {
        b
    } else {
        c
    }
}

// The copies, additions and zero tests run 32 bytes at a time where the CPU has AVX2.
with_lanes!(fn unfilter(filter: u8, bpp: usize, line: &[u8], prev: &[u8], out: &mut [u8]) -> Result<bool, String> => unfilter_impl);

/// `out` = the row whose filtered bytes are `line` (filter type `filter`), with `prev` the
/// row above (zeros for the first) and `bpp` (3 or 4) bytes per pixel; or `true`, and
/// `out` untouched, when the row is `prev` again.
#[inline(always)]
fn unfilter_impl<L: Lanes>(
    lanes: L,
    filter: u8,
    bpp: usize,
    line: &[u8],
    prev: &[u8],
    out: &mut [u8],
) -> Result<bool, String> {
    let n = out.len();
    let (line, prev) = (&line[..n], &prev[..n]);
    // Up, and Paeth by the module's induction from its first pixel (a = c = 0), repeat the
    // row above where every residual is zero; a sixth of a label map's rows do.
    if matches!(filter, 2 | 4) && all_zero(lanes, line) {
        return Ok(true);
    }
    match filter {
        0 => out.copy_from_slice(line),
        2 => {
            for ((o, &x), &b) in out.iter_mut().zip(line).zip(prev) {
                *o = x.wrapping_add(b);
            }
        }
        1 | 3 | 4 => match bpp {
            3 => unfilter_left::<L, 3>(lanes, filter, line, prev, out),
            _ => unfilter_left::<L, 4>(lanes, filter, line, prev, out),
        },
        other => return Err(format!("a row has the unknown filter type {other}")),
    }
    Ok(false)
}

/// Whether every byte of `bytes` is 0.
#[inline(always)]
fn all_zero<L: Lanes>(lanes: L, bytes: &[u8]) -> bool {
    let mut spans = bytes.chunks_exact(64);
    spans.all(|span| lanes.equal_prefix::<64>(span, &[0; 64]) == 64)
        && spans.remainder().iter().all(|&b| b == 0)
}

/// The filters that read the pixel to the left (Sub, Average, Paeth), for `BPP`-byte
/// pixels, with the flat-region copies of the module's comment.
#[inline(always)]
fn unfilter_left<L: Lanes, const BPP: usize>(
    lanes: L,
    filter: u8,
    line: &[u8],
    prev: &[u8],
    out: &mut [u8],
) {
    let n = out.len();
    let first = BPP.min(n);
    // The first pixel's left neighbours (a and c) are 0.
    for i in 0..first {
        out[i] = match filter {
            1 => line[i],
            3 => line[i].wrapping_add(prev[i] >> 1),
            _ => line[i].wrapping_add(prev[i]),
        };
    }
    let byte = |out: &[u8], j: usize| -> u8 {
        let (a, b, c) = (out[j - BPP], prev[j], prev[j - BPP]);
        line[j].wrapping_add(match filter {
            1 => a,
            3 => ((u16::from(a) + u16::from(b)) >> 1) as u8,
            _ => paeth(a, b, c),
        })
    };
    let mut i = first;
    if filter != 3 {
        // Long zero runs 64 bytes a step, what is left of the row 16 bytes a step.
        let mut as_above = false;
        copy_runs::<L, BPP, 64>(lanes, filter, line, prev, out, &mut i, &mut as_above, byte);
        copy_runs::<L, BPP, 16>(lanes, filter, line, prev, out, &mut i, &mut as_above, byte);
    }
    for j in i..n {
        out[j] = byte(out, j);
    }
}

/// The copies of Sub and Paeth rows over zero residuals (the module's comment), `SPAN`
/// bytes (16 or 64) a step from byte `i` while a step fits in the row; a byte that breaks
/// them has its pixel made by `byte`. `as_above`: whether the row so far ends as the row
/// above does (the `BPP` bytes before `i`).
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn copy_runs<L: Lanes, const BPP: usize, const SPAN: usize>(
    lanes: L,
    filter: u8,
    line: &[u8],
    prev: &[u8],
    out: &mut [u8],
    i: &mut usize,
    as_above: &mut bool,
    byte: impl Fn(&[u8], usize) -> u8,
) {
    let n = out.len();
    // The span at `i` repeats the pixel to its left: out[j] = out[j - BPP]. Each 16 bytes
    // are the pixel, rotated to their first byte's phase, times 1 + 2^(8·BPP) + ...
    let repeat_left = |out: &mut [u8], i: usize| {
        let mut pixel = [0; 4];
        pixel[..BPP].copy_from_slice(&out[i - BPP..i]);
        let pixel = u32::from_le_bytes(pixel);
        let ones = (0..16_usize.div_ceil(BPP)).fold(0u128, |r, k| r | 1 << (8 * BPP * k));
        for q in 0..SPAN / 16 {
            let phase = 16 * q % BPP;
            let rotated = if phase == 0 {
                pixel
            } else {
                (pixel >> (8 * phase) | pixel << (8 * (BPP - phase)))
                    & (u32::MAX >> (8 * (4 - BPP)))
            };
            let block = u128::from(rotated).wrapping_mul(ones);
            out[i + 16 * q..i + 16 * q + 16].copy_from_slice(&block.to_le_bytes());
        }
    };
    while *i + SPAN <= n {
        let at = *i;
        // How many residuals from byte `at` on are zero.
        let zeros = || lanes.equal_prefix::<SPAN>(&line[at..], &[0; SPAN]);
        let copied = if filter == 4 {
            *as_above = *as_above || (at - BPP..at).all(|j| out[j] == prev[j]);
            if *as_above {
                // a == c at byte at, so out[at] = b = prev[at]; then a == c at at + BPP, ...
                // Bytes past the zero residuals are written again below.
                out[at..at + SPAN].copy_from_slice(&prev[at..at + SPAN]);
                zeros()
            } else {
                // Where b == c: out[j] = a = out[j - BPP].
                let zero_and_flat = lanes.both_equal_prefix::<SPAN>(
                    &line[at..],
                    &[0; SPAN],
                    &prev[at..],
                    &prev[at - BPP..],
                );
                repeat_left(out, at);
                zero_and_flat
            }
        } else {
            repeat_left(out, at);
            zeros()
        };
        *i += copied;
        if copied < SPAN {
            // Byte i breaks the copies: its pixel byte by byte, then the copies again.
            let end = (*i + BPP).min(n);
            for j in *i..end {
                out[j] = byte(out, j);
            }
            *as_above = false;
            *i = end;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Encodes `pixels` (`w · h · bpp` bytes) with the png crate and `filter`.
    fn encode(pixels: &[u8], w: usize, h: usize, bpp: usize, filter: png::Filter) -> Vec<u8> {
        let mut out = Vec::new();
        let mut enc = png::Encoder::new(&mut out, w as u32, h as u32);
        enc.set_color(if bpp == 3 {
            ColorType::Rgb
        } else {
            ColorType::Rgba
        });
        enc.set_depth(png::BitDepth::Eight);
        enc.set_filter(filter);
        let mut writer = enc.write_header().expect("header");
        writer.write_image_data(pixels).expect("data");
        writer.finish().expect("finish");
        out
    }

    /// A label map: flat rectangles and diagonal bands, with sparse noise (`noise` in 0..256).
    fn label_map(w: usize, h: usize, bpp: usize, seed: u64, noise: u64) -> Vec<u8> {
        let mut state = seed;
        let mut rand = move || {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            state >> 33
        };
        let palette: Vec<[u8; 4]> = (0..6)
            .map(|_| [rand() as u8, rand() as u8, rand() as u8, 255])
            .collect();
        let mut px = Vec::with_capacity(w * h * bpp);
        for y in 0..h {
            for x in 0..w {
                let region = if x < w / 3 {
                    0
                } else {
                    1 + (x + y / 2) / 7 % 5
                };
                let mut p = palette[region];
                if rand() % 256 < noise {
                    p[rand() as usize % bpp] = rand() as u8;
                }
                px.extend_from_slice(&p[..bpp]);
            }
        }
        px
    }

    /// Every row as the png crate's own reader gives it.
    fn crate_rows(bytes: &[u8]) -> Vec<Vec<u8>> {
        let mut reader = png::Decoder::new(std::io::Cursor::new(bytes))
            .read_info()
            .expect("png crate reads it");
        let mut rows = Vec::new();
        while let Some(row) = reader.next_row().expect("row") {
            rows.push(row.data().to_vec());
        }
        rows
    }

    /// Every row, and how many were flagged as repeats.
    fn our_rows_and_repeats(bytes: &[u8]) -> Result<(Vec<Vec<u8>>, usize), String> {
        let (mut rows, header) = PngRows::open(bytes)?.expect("streamable");
        let mut all: Vec<Vec<u8>> = Vec::new();
        let mut repeated = 0;
        for _ in 0..header.height {
            let (row, repeats) = rows.next_row()?;
            if repeats {
                repeated += 1;
                assert_eq!(Some(&row.to_vec()), all.last(), "a repeat differs");
            }
            all.push(row.to_vec());
        }
        rows.finish()?;
        Ok((all, repeated))
    }

    fn our_rows(bytes: &[u8]) -> Result<Vec<Vec<u8>>, String> {
        our_rows_and_repeats(bytes).map(|(rows, _)| rows)
    }

    #[test]
    fn rows_equal_the_png_crate_for_every_filter() {
        crate::byte_lanes::with_each_lanes(|| {
            let filters = [
                png::Filter::NoFilter,
                png::Filter::Sub,
                png::Filter::Up,
                png::Filter::Avg,
                png::Filter::Paeth,
                png::Filter::Adaptive,
            ];
            for (w, h) in [
                (1, 1),
                (2, 3),
                (5, 4),
                (6, 8),
                (11, 6),
                (16, 5),
                (37, 9),
                (150, 70),
            ] {
                for bpp in [3, 4] {
                    for noise in [0, 3, 255] {
                        let px = label_map(w, h, bpp, (w * 31 + h + bpp) as u64, noise);
                        for filter in filters {
                            let bytes = encode(&px, w, h, bpp, filter);
                            let ours = our_rows(&bytes).expect("decodes");
                            assert_eq!(
                                ours,
                                crate_rows(&bytes),
                                "{w}x{h}x{bpp} {filter:?} {noise}"
                            );
                            assert_eq!(ours.concat(), px);
                        }
                    }
                }
            }
        });
    }

    #[test]
    fn a_change_in_the_last_byte_of_a_row() {
        crate::byte_lanes::with_each_lanes(|| {
            // Widths where the copies reach the row's last 16- or 64-byte span exactly, so the byte
            // by byte step that follows a broken copy starts within a pixel of the end.
            for (w, bpp) in [(17, 3), (13, 4), (65, 3), (17, 4)] {
                let h = 4;
                let mut px = vec![9u8; w * h * bpp];
                for k in 1..=bpp.min(2) {
                    px[2 * w * bpp - k] = 200;
                }
                for filter in [png::Filter::Paeth, png::Filter::Sub, png::Filter::Up] {
                    let bytes = encode(&px, w, h, bpp, filter);
                    assert_eq!(
                        our_rows(&bytes).expect("decodes").concat(),
                        px,
                        "{w}x{bpp} {filter:?}"
                    );
                }
            }
        });
    }

    #[test]
    fn the_panoptic_fixtures_equal_the_png_crate() {
        crate::byte_lanes::with_each_lanes(|| {
            let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../../tests/fixtures/pq/sample");
            for side in ["gt", "pred"] {
                for name in ["000000142238.png", "000000439180.png"] {
                    let bytes = std::fs::read(dir.join(side).join(name)).expect("fixture");
                    let (rows, repeated) = our_rows_and_repeats(&bytes).expect("decodes");
                    assert_eq!(rows, crate_rows(&bytes), "{side}/{name}");
                    assert!(
                        repeated > rows.len() / 10,
                        "{side}/{name}: {repeated} repeats"
                    );
                }
            }
        });
    }

    #[test]
    fn corrupt_files_are_errors() {
        let px = label_map(40, 30, 3, 7, 10);
        let bytes = encode(&px, 40, 30, 3, png::Filter::Paeth);
        for cut in [20, 40, bytes.len() / 2, bytes.len() - 13] {
            let truncated = &bytes[..cut];
            let read = PngRows::open(truncated).and_then(|opened| {
                let (mut rows, header) = opened.ok_or("not streamable")?;
                (0..header.height).try_for_each(|_| rows.next_row().map(drop))?;
                rows.finish()
            });
            assert!(read.is_err(), "cut at {cut} read");
        }
        // A flipped byte in the image data fails its CRC.
        let mut flipped = bytes.clone();
        let at = flipped.len() - 20;
        flipped[at] ^= 0x55;
        assert!(our_rows(&flipped).is_err());
        // An unknown filter type: store the rows uncompressed with filter byte 9.
        let mut raw = Vec::new();
        for row in px.chunks(40 * 3) {
            raw.push(9);
            raw.extend_from_slice(row);
        }
        let mut bad = Vec::new();
        {
            let mut enc = png::Encoder::new(&mut bad, 40, 30);
            enc.set_color(ColorType::Rgb);
            let mut writer = enc.write_header().expect("header");
            writer
                .write_chunk(png::chunk::IDAT, &zlib_stored(&raw))
                .expect("chunk");
        }
        let err = our_rows(&bad).expect_err("filter 9");
        assert!(err.contains("unknown filter type 9"), "{err}");
    }

    #[test]
    fn what_follows_the_last_row_is_checked_not_inflated() {
        let (w, h) = (40, 30);
        let px = label_map(w, h, 3, 11, 10);
        // A file without IEND reads as libpng and PIL read it.
        let bytes = encode(&px, w, h, 3, png::Filter::Paeth);
        assert_eq!(&bytes[bytes.len() - 8..bytes.len() - 4], b"IEND");
        let no_end = &bytes[..bytes.len() - 12];
        assert_eq!(our_rows(no_end).expect("no IEND").concat(), px);
        // Image data past the declared rows (here 200 more rows) is skipped, as the png
        // crate's reader skips it, but its chunks' CRCs are still checked.
        let mut raw = Vec::new();
        for row in px
            .chunks(w * 3)
            .chain(std::iter::repeat_n(&px[..w * 3], 200))
        {
            raw.push(0);
            raw.extend_from_slice(row);
        }
        let with_idat = |chunk: &[u8]| {
            let mut out = Vec::new();
            let mut enc = png::Encoder::new(&mut out, w as u32, h as u32);
            enc.set_color(ColorType::Rgb);
            let mut writer = enc.write_header().expect("header");
            writer.write_chunk(png::chunk::IDAT, chunk).expect("chunk");
            drop(writer);
            out
        };
        let long = with_idat(&zlib_stored(&raw));
        assert_eq!(our_rows(&long).expect("extra rows").concat(), px);
        let mut flipped = long.clone();
        let at = flipped.len() - 30;
        flipped[at] ^= 1;
        let err = our_rows(&flipped).expect_err("a bad CRC after the last row");
        assert!(err.contains("CRC"), "{err}");
    }

    /// `data` as a zlib stream of stored (uncompressed) deflate blocks.
    fn zlib_stored(data: &[u8]) -> Vec<u8> {
        let mut out = vec![0x78, 0x01];
        let chunks: Vec<&[u8]> = data.chunks(65535).collect();
        for (k, chunk) in chunks.iter().enumerate() {
            out.push(u8::from(k + 1 == chunks.len()));
            let len = chunk.len() as u16;
            out.extend_from_slice(&len.to_le_bytes());
            out.extend_from_slice(&(!len).to_le_bytes());
            out.extend_from_slice(chunk);
        }
        let (mut a, mut b) = (1u32, 0u32);
        for &x in data {
            a = (a + u32::from(x)) % 65521;
            b = (b + a) % 65521;
        }
        out.extend_from_slice(&((b << 16) | a).to_be_bytes());
        out
    }
}
