//! 4:2:0 YUV to RGB and back, BT.601 with limited range: what H.264 and Y4M files from
//! cameras and encoders hold unless they say otherwise. Decoding uses OpenCV's fixed-point
//! coefficients (`cvtColor(COLOR_YUV2RGB_I420)`, nearest chroma), so a frame we decode equals
//! what an OpenCV user gets from the same YUV planes.

/// A 4:2:0 picture: full-size luma, chroma planes of `(w + 1) / 2 x (h + 1) / 2`.
pub struct Yuv420<'a> {
    pub width: usize,
    pub height: usize,
    pub y: &'a [u8],
    pub u: &'a [u8],
    pub v: &'a [u8],
    /// Row strides of the Y and of the U, V planes.
    pub y_stride: usize,
    pub uv_stride: usize,
}

// OpenCV's ITUR_BT_601_* constants: the coefficients times 2^20.
const SHIFT: i32 = 20;
const CY: i32 = 1_220_542;
const CUB: i32 = 2_116_026;
const CUG: i32 = -409_993;
const CVG: i32 = -852_492;
const CVR: i32 = 1_673_527;
const HALF: i32 = 1 << (SHIFT - 1);

fn saturate(v: i32) -> u8 {
    (v >> SHIFT).clamp(0, 255) as u8
}

impl Yuv420<'_> {
    /// Whether the planes hold the picture (strides and lengths), so that conversion cannot
    /// read out of bounds.
    pub fn check(&self) -> Result<(), String> {
        let (cw, ch) = (self.width.div_ceil(2), self.height.div_ceil(2));
        let need = |rows: usize, stride: usize, width: usize| {
            if rows == 0 {
                0
            } else {
                (rows - 1) * stride + width
            }
        };
        if self.y_stride < self.width
            || self.uv_stride < cw
            || self.y.len() < need(self.height, self.y_stride, self.width)
            || self.u.len() < need(ch, self.uv_stride, cw)
            || self.v.len() < need(ch, self.uv_stride, cw)
        {
            return Err(format!(
                "the decoded {}x{} picture's planes are too small",
                self.width, self.height
            ));
        }
        Ok(())
    }

    /// Interleaved RGB u8, `width * height * 3` bytes.
    pub fn to_rgb(&self) -> Result<Vec<u8>, String> {
        self.check()?;
        let (w, h) = (self.width, self.height);
        let mut rgb = vec![0u8; w * h * 3];
        for (row, out) in rgb.chunks_exact_mut(w * 3).enumerate().take(h) {
            let y_row = &self.y[row * self.y_stride..][..w];
            let u_row = &self.u[(row / 2) * self.uv_stride..][..w.div_ceil(2)];
            let v_row = &self.v[(row / 2) * self.uv_stride..][..w.div_ceil(2)];
            // Two pixels share a chroma sample: its three terms are computed once per pair.
            let pairs = out
                .chunks_mut(6)
                .zip(y_row.chunks(2))
                .zip(u_row.iter().zip(v_row));
            for ((px, lumas), (&u, &v)) in pairs {
                let (u, v) = (i32::from(u) - 128, i32::from(v) - 128);
                let (r, g, b) = (HALF + CVR * v, HALF + CVG * v + CUG * u, HALF + CUB * u);
                for (p, &luma) in px.chunks_exact_mut(3).zip(lumas) {
                    let y1 = (i32::from(luma) - 16).max(0) * CY;
                    p[0] = saturate(y1 + r);
                    p[1] = saturate(y1 + g);
                    p[2] = saturate(y1 + b);
                }
            }
        }
        Ok(rgb)
    }
}

/// RGB u8 `[h, w, 3]` to 4:2:0 planes of `even(w) x even(h)` (the encoder's size: an odd
/// last column or row is repeated), BT.601 limited range; chroma from the 2x2 block's mean.
pub fn rgb_to_yuv420(rgb: &[u8], width: usize, height: usize) -> (usize, usize, Vec<u8>) {
    let (ew, eh) = (width.div_ceil(2) * 2, height.div_ceil(2) * 2);
    let mut out = vec![0u8; ew * eh * 3 / 2];
    let (y_plane, chroma) = out.split_at_mut(ew * eh);
    let (u_plane, v_plane) = chroma.split_at_mut(ew * eh / 4);
    let pixel = |x: usize, y: usize| {
        let i = (y.min(height - 1) * width + x.min(width - 1)) * 3;
        [
            i32::from(rgb[i]),
            i32::from(rgb[i + 1]),
            i32::from(rgb[i + 2]),
        ]
    };
    for y in 0..eh {
        for x in 0..ew {
            let [r, g, b] = pixel(x, y);
            y_plane[y * ew + x] = (((66 * r + 129 * g + 25 * b + 128) >> 8) + 16) as u8;
        }
    }
    for cy in 0..eh / 2 {
        for cx in 0..ew / 2 {
            let mut sum = [0i32; 3];
            for (dx, dy) in [(0, 0), (1, 0), (0, 1), (1, 1)] {
                let p = pixel(2 * cx + dx, 2 * cy + dy);
                for c in 0..3 {
                    sum[c] += p[c];
                }
            }
            let [r, g, b] = sum.map(|s| (s + 2) / 4);
            u_plane[cy * ew / 2 + cx] = (((-38 * r - 74 * g + 112 * b + 128) >> 8) + 128) as u8;
            v_plane[cy * ew / 2 + cx] = (((112 * r - 94 * g - 18 * b + 128) >> 8) + 128) as u8;
        }
    }
    (ew, eh, out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `cv2.cvtColor(planes, cv2.COLOR_YUV2RGB_I420)` (OpenCV 5.1.0) on a seeded random 6x4
    /// picture (`np.random.default_rng(0)`, Y then U then V).
    #[test]
    fn decodes_as_opencv_does() {
        let y = [
            95u8, 130, 194, 217, 207, 235, 15, 163, 33, 215, 217, 130, 248, 189, 16, 69, 184, 232,
            205, 78, 169, 61, 125, 10,
        ];
        let (u, v) = ([29u8, 240, 66, 19, 182, 39], [59u8, 81, 222, 44, 120, 122]);
        let pic = Yuv420 {
            width: 6,
            height: 4,
            y: &y,
            u: &u,
            v: &v,
            y_stride: 6,
            uv_stride: 3,
        };
        let opencv = [
            0u8, 187, 0, 23, 228, 0, 132, 202, 255, 159, 228, 255, 255, 170, 97, 255, 203, 130, 0,
            95, 0, 61, 255, 0, 0, 14, 246, 157, 226, 255, 255, 182, 109, 255, 81, 8, 136, 255, 50,
            67, 255, 0, 0, 0, 109, 49, 47, 171, 186, 235, 16, 242, 255, 72, 86, 255, 0, 0, 183, 0,
            165, 163, 255, 40, 38, 161, 117, 167, 0, 0, 40, 0,
        ];
        assert_eq!(pic.to_rgb().unwrap(), opencv);
    }

    #[test]
    fn grey_round_trips_and_odd_sizes_pad() {
        let rgb = vec![128u8; 3 * 3 * 3];
        let (w, h, yuv) = rgb_to_yuv420(&rgb, 3, 3);
        assert_eq!((w, h, yuv.len()), (4, 4, 24));
        let pic = Yuv420 {
            width: 3,
            height: 3,
            y: &yuv[..16],
            u: &yuv[16..20],
            v: &yuv[20..24],
            y_stride: 4,
            uv_stride: 2,
        };
        let back = pic.to_rgb().unwrap();
        assert!(back.iter().all(|&c| (127..=129).contains(&c)), "{back:?}");
        let short = Yuv420 {
            y: &yuv[..5],
            ..pic
        };
        assert!(short.to_rgb().is_err());
    }
}
