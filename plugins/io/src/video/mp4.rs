//! H.264 in MP4 (or QuickTime): the `mp4` crate reads the index, OpenH264 (compiled from
//! source by cargo, no system library) decodes. OpenH264 decodes Constrained Baseline only,
//! so other profiles are refused up front with the command that converts the file.

use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;

use openh264::decoder::Decoder;
use openh264::formats::YUVSource;

use super::yuv::Yuv420;
use super::{Frame, FrameReader};

/// What to run on a file OpenH264 cannot decode.
pub fn convert_command(name: &str) -> String {
    format!(
        "ffmpeg -i {name} -c:v libx264 -profile:v baseline -pix_fmt yuv420p -an -movflags +faststart out.mp4"
    )
}

/// The H.264 profile named by an SPS's `profile_idc` and constraint flags.
fn profile_name(profile_idc: u8, constraints: u8) -> String {
    match profile_idc {
        66 if constraints & 0x40 != 0 => "Constrained Baseline".into(),
        66 => "Baseline".into(),
        77 => "Main".into(),
        88 => "Extended".into(),
        100 => "High".into(),
        110 => "High 10".into(),
        122 => "High 4:2:2".into(),
        244 => "High 4:4:4 Predictive".into(),
        other => format!("profile_idc {other}"),
    }
}

/// The end of the last complete top-level box: a file cut short keeps the boxes before the
/// cut readable (the index, when it comes first) and the samples before it decodable.
fn readable_size(file: &mut File, len: u64) -> std::io::Result<(u64, bool)> {
    let (mut at, mut saw_index) = (0u64, false);
    while at + 8 <= len {
        file.seek(SeekFrom::Start(at))?;
        let mut header = [0u8; 16];
        file.read_exact(&mut header[..8])?;
        let mut size = u64::from(u32::from_be_bytes([
            header[0], header[1], header[2], header[3],
        ]));
        if size == 1 {
            if at + 16 > len {
                break;
            }
            file.read_exact(&mut header[8..])?;
            size = u64::from_be_bytes(header[8..16].try_into().unwrap_or_default());
        } else if size == 0 {
            size = len - at;
        }
        if size < 8 || at.saturating_add(size) > len {
            break;
        }
        saw_index |= &header[4..8] == b"moov";
        at += size;
    }
    Ok((at, saw_index))
}

/// A reader that fails once it has read more than its budget of bytes. The `mp4` crate
/// loops for ever on some malformed boxes (a child box of size 0 makes it seek back and read
/// the same header again); a valid file reads each byte of its index about once and each
/// sample once, so a budget of a few times the file's size turns such a loop into an error.
struct BudgetReader {
    inner: BufReader<File>,
    read: u64,
    budget: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl Read for BudgetReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.read += n as u64;
        if self.read > self.budget.load(std::sync::atomic::Ordering::Relaxed) {
            return Err(std::io::Error::other(
                "its boxes make the reader go round in circles",
            ));
        }
        Ok(n)
    }
}

impl Seek for BudgetReader {
    fn seek(&mut self, pos: SeekFrom) -> std::io::Result<u64> {
        self.inner.seek(pos)
    }
}

pub struct Mp4Reader {
    name: String,
    reader: mp4::Mp4Reader<BudgetReader>,
    decoder: Decoder,
    track: u32,
    samples: u32,
    next_sample: u32,
    file_len: u64,
    timescale: u32,
    length_size: usize,
    annexb: Vec<u8>,
    /// Presentation times of the samples given to the decoder and not yet returned by it
    /// (none for Baseline, which has no reordering, unless the decoder holds a frame back).
    times: std::collections::VecDeque<u64>,
    flushed: bool,
    /// The frames flushed out of the decoder at the end.
    held: std::collections::VecDeque<Frame>,
}

fn container_error(e: mp4::Error) -> String {
    format!("the MP4 container is malformed: {e}")
}

impl Mp4Reader {
    pub fn open(path: &Path) -> Result<Mp4Reader, String> {
        let name = path.display().to_string();
        let mut file = File::open(path).map_err(|e| format!("cannot open: {e}"))?;
        let len = file.metadata().map_err(|e| e.to_string())?.len();
        let (size, saw_index) = readable_size(&mut file, len).map_err(|e| e.to_string())?;
        if !saw_index {
            return Err(if size < len {
                format!("the file is cut short at byte {len} before its index (moov box) was read: it cannot be played")
            } else {
                "the MP4 file has no index (moov box)".into()
            });
        }
        file.seek(SeekFrom::Start(0)).map_err(|e| e.to_string())?;
        // The mp4 crate is not hardened against every malformed box: a panic inside it is a
        // malformed file, not a crash.
        // The index is read within twice the file's size, then every sample once more.
        let budget = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(2 * len + (1 << 20)));
        let input = BudgetReader {
            inner: BufReader::new(file),
            read: 0,
            budget: budget.clone(),
        };
        let reader = catch_unwind(AssertUnwindSafe(|| {
            mp4::Mp4Reader::read_header(input, size)
        }))
        .map_err(|_| "the MP4 container is malformed (its boxes cannot be parsed)".to_string())?
        .map_err(container_error)?;
        let mut tracks: Vec<(&u32, &mp4::Mp4Track)> = reader.tracks().iter().collect();
        tracks.sort_by_key(|t| *t.0);
        let video = tracks
            .iter()
            .find(|(_, t)| t.trak.mdia.minf.stbl.stsd.avc1.is_some());
        let Some(&(&track, t)) = video else {
            let kinds: Vec<String> = tracks
                .iter()
                .map(|(_, t)| t.box_type().map_or("unknown".into(), |b| b.to_string()))
                .collect();
            return Err(format!(
                "no H.264 (avc1) video track: the tracks are [{}]; convert with: {}",
                kinds.join(", "),
                convert_command(&name)
            ));
        };
        let avc = t
            .trak
            .mdia
            .minf
            .stbl
            .stsd
            .avc1
            .as_ref()
            .map(|a| &a.avcc)
            .ok_or("no avcC box")?;
        let sps = avc
            .sequence_parameter_sets
            .first()
            .map(|n| n.bytes.as_slice())
            .filter(|b| b.len() >= 4)
            .ok_or("the H.264 track has no sequence parameter set")?;
        let (profile_idc, constraints) = (sps[1], sps[2]);
        if profile_idc != 66 {
            return Err(format!(
                "H.264 {} profile: this decoder (OpenH264) reads Constrained Baseline only; convert with: {}",
                profile_name(profile_idc, constraints),
                convert_command(&name)
            ));
        }
        budget.fetch_add(2 * len, std::sync::atomic::Ordering::Relaxed);
        let mut decoder = Decoder::new().map_err(|e| format!("cannot start the decoder: {e}"))?;
        let mut headers = Vec::new();
        for nal in avc
            .sequence_parameter_sets
            .iter()
            .chain(&avc.picture_parameter_sets)
        {
            headers.extend_from_slice(&[0, 0, 0, 1]);
            headers.extend_from_slice(&nal.bytes);
        }
        decoder
            .decode(&headers)
            .map_err(|e| format!("the H.264 parameter sets are corrupt: {e}"))?;
        // The crate sums the fragments' sample counts with a panic on overflow.
        let samples = catch_unwind(AssertUnwindSafe(|| t.sample_count()))
            .map_err(|_| "the MP4 fragments' sample counts overflow: the file is corrupt")?;
        Ok(Mp4Reader {
            name,
            track,
            samples,
            file_len: len,
            timescale: t.timescale().max(1),
            length_size: usize::from(avc.length_size_minus_one & 3) + 1,
            reader,
            decoder,
            next_sample: 1,
            annexb: Vec::new(),
            times: Default::default(),
            flushed: false,
            held: Default::default(),
        })
    }

    /// The frames in the file (from its index).
    pub fn frame_count(&self) -> u32 {
        self.samples
    }

    /// A sample's NAL units, length-prefixed as MP4 stores them, with start codes instead.
    fn load_annexb(&mut self, sample: &[u8], frame: u32) -> Result<(), String> {
        self.annexb.clear();
        let mut rest = sample;
        while !rest.is_empty() {
            if rest.len() < self.length_size {
                return Err(format!(
                    "frame {frame}: a NAL unit length is cut short: the data is corrupt"
                ));
            }
            let (len, tail) = rest.split_at(self.length_size);
            let n = len
                .iter()
                .fold(0usize, |acc, &b| (acc << 8) | usize::from(b));
            if n > tail.len() {
                return Err(format!(
                    "frame {frame}: a NAL unit of {n} bytes overruns its {}-byte sample: the data is corrupt",
                    tail.len()
                ));
            }
            self.annexb.extend_from_slice(&[0, 0, 0, 1]);
            self.annexb.extend_from_slice(&tail[..n]);
            rest = &tail[n..];
        }
        Ok(())
    }
}

/// The size the index declares for a frame (0-based), as the crate will read it: from the
/// fragments' `trun` boxes when the file is fragmented, else from `stsz`. 0 when the index
/// has no entry (the crate then reports the sample missing).
fn declared_size(track: &mp4::Mp4Track, frame: u32) -> u32 {
    if track.trafs.is_empty() {
        let stsz = &track.trak.mdia.minf.stbl.stsz;
        if stsz.sample_size > 0 {
            return stsz.sample_size;
        }
        return stsz.sample_sizes.get(frame as usize).copied().unwrap_or(0);
    }
    let mut first = 0u64;
    for trun in track.trafs.iter().filter_map(|traf| traf.trun.as_ref()) {
        let index = u64::from(frame) - first;
        if index < u64::from(trun.sample_count) {
            return usize::try_from(index)
                .ok()
                .and_then(|i| trun.sample_sizes.get(i).copied())
                .unwrap_or(0);
        }
        first += u64::from(trun.sample_count);
    }
    0
}

fn to_frame(yuv: &openh264::decoder::DecodedYUV<'_>, pts_ns: u64) -> Result<Frame, String> {
    let (width, height) = yuv.dimensions();
    let (y_stride, uv_stride, _) = yuv.strides();
    let rgb = Yuv420 {
        width,
        height,
        y: yuv.y(),
        u: yuv.u(),
        v: yuv.v(),
        y_stride,
        uv_stride,
    }
    .to_rgb()?;
    Ok(Frame {
        width,
        height,
        rgb,
        pts_ns,
    })
}

impl FrameReader for Mp4Reader {
    fn next_frame(&mut self) -> Result<Option<Frame>, String> {
        while self.next_sample <= self.samples {
            let id = self.next_sample;
            let frame = id - 1;
            self.next_sample += 1;
            // The crate allocates a sample's declared size before reading it: a damaged
            // index could declare gigabytes.
            let declared = self
                .reader
                .tracks()
                .get(&self.track)
                .map_or(0, |t| declared_size(t, frame));
            if u64::from(declared) > self.file_len {
                return Err(format!(
                    "frame {frame}: the index gives it {declared} bytes, more than the file's {}: the file is corrupt",
                    self.file_len
                ));
            }
            // The crate indexes and adds the index's numbers unchecked (an `stts` without an
            // entry for the sample, overflowing sums): a panic there is a corrupt index.
            let read = catch_unwind(AssertUnwindSafe(|| self.reader.read_sample(self.track, id)))
                .map_err(|_| {
                format!(
                    "frame {frame}: the MP4 index is corrupt (its sample tables cannot be read)"
                )
            })?;
            let sample = match read {
                Ok(Some(s)) => s,
                Ok(None) => return Err(format!("frame {frame}: missing from the file's index")),
                Err(mp4::Error::IoError(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                    return Err(format!(
                        "frame {frame}: the file ends inside this frame's data (truncated after {frame} of {} frames)",
                        self.samples
                    ))
                }
                Err(e) => return Err(format!("frame {frame}: {}", container_error(e))),
            };
            let pts = (i128::from(sample.start_time) + i128::from(sample.rendering_offset)).max(0);
            self.times.push_back(
                u64::try_from(pts * 1_000_000_000 / i128::from(self.timescale)).unwrap_or(u64::MAX),
            );
            self.load_annexb(&sample.bytes, frame)?;
            let decoded = self
                .decoder
                .decode(&self.annexb)
                // OpenH264's error says no more than its status code.
                .map_err(|_| {
                    format!("frame {frame}: the H.264 data is corrupt (the decoder refused it)")
                })?;
            if let Some(yuv) = decoded {
                let pts_ns = self.times.pop_front().unwrap_or_default();
                return to_frame(&yuv, pts_ns)
                    .map(Some)
                    .map_err(|e| format!("frame {frame}: {e}"));
            }
        }
        // The end of the samples: frames the decoder still holds.
        if !self.flushed && !self.times.is_empty() {
            self.flushed = true;
            let held = self
                .decoder
                .flush_remaining()
                .map_err(|e| format!("the last frames cannot be decoded: {e}"))?;
            let mut frames = Vec::new();
            for yuv in &held {
                let pts_ns = self.times.pop_front().unwrap_or_default();
                frames.push(to_frame(yuv, pts_ns)?);
            }
            drop(held);
            self.held = frames.into();
        }
        Ok(self.held.pop_front())
    }

    fn name(&self) -> &str {
        &self.name
    }
}
