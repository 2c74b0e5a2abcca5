//! COCO run-length encoding of binary masks, byte-identical to pycocotools.
//!
//! [`encode`] produces the uncompressed runs that `pycocotools.mask.encode` computes on a
//! Fortran-ordered array: the mask is scanned column by column (column-major), and the runs
//! alternate between zeros and ones, starting with a (possibly empty) run of zeros.
//! [`to_string`] is `rleToString` of pycocotools' `maskApi.c`: every count, after the first
//! three replaced by its difference to the count two places before, is written as a signed
//! LEB128-like number with 5 data bits per character, characters `'0'` (48) to `'o'` (111).
//! [`decode`] is the inverse of [`to_string`] (`rleFrString`).

/// The runs of a row-major `h` x `w` mask (any nonzero byte is foreground), in COCO order:
/// column-major, starting with a run of zeros. An empty mask gives `[0]`, as pycocotools does.
///
/// # Panics
/// Never; a `mask` shorter than `h * w` is read as zeros beyond its end.
pub fn encode(mask: &[u8], h: usize, w: usize) -> Vec<u32> {
    let mut counts = Vec::new();
    let mut prev = false;
    let mut run: u32 = 0;
    for x in 0..w {
        for y in 0..h {
            let on = mask.get(y * w + x).is_some_and(|&v| v != 0);
            if on != prev {
                counts.push(run);
                run = 0;
                prev = on;
            }
            run = run.wrapping_add(1);
        }
    }
    counts.push(run);
    counts
}

/// The compressed string of `counts` (pycocotools' `rleToString`).
pub fn to_string(counts: &[u32]) -> String {
    let mut s = String::with_capacity(counts.len() * 2);
    for (i, &c) in counts.iter().enumerate() {
        let mut x = i64::from(c);
        if i > 2 {
            x -= i64::from(counts[i - 2]);
        }
        loop {
            let mut ch = (x & 0x1f) as u8;
            x >>= 5;
            let more = if ch & 0x10 != 0 { x != -1 } else { x != 0 };
            if more {
                ch |= 0x20;
            }
            s.push(char::from(ch + 48));
            if !more {
                break;
            }
        }
    }
    s
}

/// Parses a compressed RLE string back into counts (pycocotools' `rleFrString`). Characters
/// outside `'0'..='o'` and numbers that do not fit a count are errors.
pub fn decode(s: &str) -> Result<Vec<u32>, String> {
    let bytes = s.as_bytes();
    let mut counts: Vec<u32> = Vec::new();
    let mut p = 0;
    while p < bytes.len() {
        let mut x: i64 = 0;
        let mut k: u32 = 0;
        loop {
            let Some(&b) = bytes.get(p) else {
                return Err(format!(
                    "RLE string ends in the middle of a number (at character {p})"
                ));
            };
            if !(48..=111).contains(&b) {
                return Err(format!(
                    "RLE string has an invalid character {:?} at position {p}",
                    char::from(b)
                ));
            }
            // A u32 count (or a difference of two) needs at most 7 characters of 5 bits.
            if k >= 7 {
                return Err(format!("RLE string has a number too long at position {p}"));
            }
            let c = i64::from(b - 48);
            x |= (c & 0x1f) << (5 * k);
            let more = c & 0x20 != 0;
            p += 1;
            k += 1;
            if !more {
                if c & 0x10 != 0 {
                    x |= -1i64 << (5 * k);
                }
                break;
            }
        }
        let m = counts.len();
        if m > 2 {
            x += i64::from(counts[m - 2]);
        }
        let count = u32::try_from(x)
            .map_err(|_| format!("RLE string decodes to an invalid count {x} (run {m})"))?;
        counts.push(count);
    }
    Ok(counts)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value as Json;

    const FIXTURE: &str = include_str!("../../../tests/fixtures/rle.json");

    #[test]
    fn matches_pycocotools_on_every_fixture_mask() {
        let fixture: Json = serde_json::from_str(FIXTURE).unwrap();
        let cases = fixture["cases"].as_array().unwrap();
        assert!(cases.len() >= 20);
        for case in cases {
            let name = case["name"].as_str().unwrap();
            let h = case["height"].as_u64().unwrap() as usize;
            let w = case["width"].as_u64().unwrap() as usize;
            let mask: Vec<u8> = case["mask"]
                .as_str()
                .unwrap()
                .bytes()
                .map(|b| b - b'0')
                .collect();
            assert_eq!(mask.len(), h * w, "{name}");
            let runs: Vec<u32> = case["runs"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| r.as_u64().unwrap() as u32)
                .collect();
            let expected = case["counts"].as_str().unwrap();

            let counts = encode(&mask, h, w);
            assert_eq!(counts, runs, "runs of {name}");
            assert_eq!(to_string(&counts), expected, "string of {name}");
            assert_eq!(decode(expected).unwrap(), runs, "decode of {name}");
        }
    }

    #[test]
    fn nonzero_bytes_are_foreground() {
        assert_eq!(encode(&[0, 7, 255, 0], 2, 2), encode(&[0, 1, 1, 0], 2, 2));
        // Column-major: [[0, 1], [1, 0]] -> column 0 = 0,1; column 1 = 1,0.
        assert_eq!(encode(&[0, 1, 1, 0], 2, 2), vec![1, 2, 1]);
    }

    #[test]
    fn empty_mask_is_a_single_zero_run() {
        assert_eq!(encode(&[], 0, 5), vec![0]);
        assert_eq!(to_string(&[0]), "0");
    }

    #[test]
    fn large_counts_and_negative_deltas_round_trip() {
        let counts = vec![0, u32::MAX, 1, 7, u32::MAX - 3, 0, 123_456, 5, 1 << 20, 2];
        assert_eq!(decode(&to_string(&counts)).unwrap(), counts);
    }

    #[test]
    fn malformed_strings_are_errors_not_panics() {
        assert!(decode("0 1").unwrap_err().contains("invalid character"));
        assert!(decode("o").unwrap_err().contains("ends in the middle"));
        assert!(decode("oooooooooooooo1").is_err());
        // A negative first count.
        assert!(decode("O").unwrap_err().contains("invalid count"));
        for s in ["", "0", "ooooo0", "0h0", "\\\\\\"] {
            let _ = decode(s);
        }
    }
}
