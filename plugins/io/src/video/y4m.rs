//! YUV4MPEG2 (`.y4m`): a text header, then `FRAME` lines each followed by raw planes. Only
//! 4:2:0 (and greyscale) files are read: the colour spaces H.264 Constrained Baseline and
//! the detectors downstream use.

use std::io::{BufRead, BufReader, Read};
use std::path::Path;

use super::yuv::Yuv420;
use super::{Frame, FrameReader};

/// Longest header or `FRAME` line accepted: a real one is well under 100 bytes.
const MAX_LINE: usize = 4096;

pub struct Y4mReader {
    input: BufReader<std::fs::File>,
    /// Bytes of the file not read yet: a frame larger than the rest is a truncated file,
    /// known before its buffer is allocated (a damaged header can declare gigabytes).
    remaining: u64,
    name: String,
    width: usize,
    height: usize,
    grey: bool,
    /// A frame lasts `rate.0 / rate.1` seconds (the `F` tag is frames per second, num:den).
    rate: (u64, u64),
    frame: u64,
    planes: Vec<u8>,
}

/// One line without its `\n`; `None` at a clean end of file.
fn read_line(input: &mut impl BufRead) -> std::io::Result<Option<Vec<u8>>> {
    let mut line = Vec::new();
    let n = input.take(MAX_LINE as u64).read_until(b'\n', &mut line)?;
    if n == 0 {
        return Ok(None);
    }
    if line.last() != Some(&b'\n') {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            if n >= MAX_LINE {
                "a header line longer than 4096 bytes"
            } else {
                "the file ends inside a header line"
            },
        ));
    }
    line.pop();
    Ok(Some(line))
}

impl Y4mReader {
    pub fn open(path: &Path) -> Result<Y4mReader, String> {
        let name = path.display().to_string();
        let file = std::fs::File::open(path).map_err(|e| format!("cannot open: {e}"))?;
        let len = file
            .metadata()
            .map_err(|e| format!("cannot read: {e}"))?
            .len();
        let mut input = BufReader::new(file);
        let header = read_line(&mut input)
            .map_err(|e| format!("cannot read the Y4M header: {e}"))?
            .ok_or("the file is empty")?;
        let remaining = len.saturating_sub(header.len() as u64 + 1);
        let header = String::from_utf8_lossy(&header).into_owned();
        let mut tags = header.split(' ');
        if tags.next() != Some("YUV4MPEG2") {
            return Err("not a YUV4MPEG2 file (the header must start with \"YUV4MPEG2 \")".into());
        }
        let (mut width, mut height, mut rate, mut colour) = (0usize, 0usize, (25, 1), "420jpeg");
        for tag in tags.filter(|t| !t.is_empty()) {
            // A tag is one letter and its value (the header may hold any bytes).
            let mut chars = tag.chars();
            let key = chars.next();
            let value = chars.as_str();
            let bad = || format!("bad header tag {tag:?}");
            match key {
                Some('W') => width = value.parse().map_err(|_| bad())?,
                Some('H') => height = value.parse().map_err(|_| bad())?,
                Some('F') => {
                    let (n, d) = value.split_once(':').ok_or_else(bad)?;
                    let (n, d): (u64, u64) =
                        (n.parse().map_err(|_| bad())?, d.parse().map_err(|_| bad())?);
                    if n == 0 || d == 0 {
                        return Err(format!("frame rate {n}:{d} must be positive"));
                    }
                    rate = (n, d);
                }
                Some('C') => colour = value,
                _ => {}
            }
        }
        if width == 0 || height == 0 {
            return Err(format!("the header gives no frame size (W, H): {header:?}"));
        }
        crate::image_source::check_size(width, height)?;
        let grey = match colour {
            "420jpeg" | "420paldv" | "420mpeg2" | "420" => false,
            "mono" => true,
            other => {
                return Err(format!(
                    "colour space C{other} is not supported (4:2:0 and mono are); convert with: ffmpeg -i {name} -pix_fmt yuv420p out.y4m"
                ))
            }
        };
        Ok(Y4mReader {
            input,
            remaining,
            name,
            width,
            height,
            grey,
            rate: (rate.1, rate.0),
            frame: 0,
            planes: Vec::new(),
        })
    }
}

impl FrameReader for Y4mReader {
    fn next_frame(&mut self) -> Result<Option<Frame>, String> {
        let at = |e: String| format!("frame {}: {e}", self.frame);
        let Some(line) = read_line(&mut self.input).map_err(|e| at(e.to_string()))? else {
            return Ok(None);
        };
        if !line.starts_with(b"FRAME") {
            return Err(at("expected a FRAME line: the file is corrupt".into()));
        }
        let (w, h) = (self.width, self.height);
        let chroma = w.div_ceil(2) * h.div_ceil(2);
        let size = w * h + if self.grey { 0 } else { 2 * chroma };
        self.remaining = self.remaining.saturating_sub(line.len() as u64 + 1);
        if size as u64 > self.remaining {
            return Err(at(format!(
                "the file ends inside this frame's {size} bytes (truncated)"
            )));
        }
        self.remaining -= size as u64;
        self.planes.resize(size, 0);
        self.input.read_exact(&mut self.planes).map_err(|e| {
            at(if e.kind() == std::io::ErrorKind::UnexpectedEof {
                format!("the file ends inside this frame's {size} bytes (truncated)")
            } else {
                e.to_string()
            })
        })?;
        let neutral = vec![128u8; if self.grey { chroma } else { 0 }];
        let (y, uv) = self.planes.split_at(w * h);
        let (u, v) = if self.grey {
            (&neutral[..], &neutral[..])
        } else {
            uv.split_at(chroma)
        };
        let rgb = Yuv420 {
            width: w,
            height: h,
            y,
            u,
            v,
            y_stride: w,
            uv_stride: w.div_ceil(2),
        }
        .to_rgb()
        .map_err(at)?;
        let frame = Frame {
            width: w,
            height: h,
            rgb,
            pts_ns: self.frame_pts(),
        };
        self.frame += 1;
        Ok(Some(frame))
    }

    fn name(&self) -> &str {
        &self.name
    }
}

impl Y4mReader {
    /// The presentation time of the current frame: index x den / num seconds.
    fn frame_pts(&self) -> u64 {
        let (den, num) = self.rate;
        (u128::from(self.frame) * 1_000_000_000 * u128::from(den) / u128::from(num.max(1)))
            .try_into()
            .unwrap_or(u64::MAX)
    }
}
