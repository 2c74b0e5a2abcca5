#!/usr/bin/env python3
"""Generates the tiny video fixtures in tests/fixtures/video/ and what ffmpeg/ffprobe say about
them, in tests/fixtures/video/expected.json. With --vtest it also re-encodes OpenCV's vtest.avi
into assets/vtest_baseline.mp4 (see assets/README.md).

    apt-get install ffmpeg          # only needed to regenerate; tests and CI do not use ffmpeg
    python3 tests/reference/make_video_fixtures.py [--vtest PATH/TO/vtest.avi]

Made with ffmpeg 5.1.9-0+deb12u1 (Debian 12 package `ffmpeg`, libavcodec 59) and libx264
0.164.3095+gitbaee400 (Debian package `libx264-164`), Python 3.11, standard library only.
Encoders are not bit-stable across versions: another ffmpeg/x264 may write different bytes
(expected.json is always rewritten from the files actually written, so it stays consistent).
H.264 decoding is bit-exact by the standard, so tiny_baseline.yuv is what any conforming
decoder must produce from tiny_baseline.mp4. The encodes use one thread so that the output
does not depend on the machine's core count.

Files (frame indices are 0-based; "the 8th frame" is index 7):
  tiny_baseline.mp4   12 frames 64x48 at 10 fps, H.264 Constrained Baseline (CAVLC, no B),
                      IDR every 5 frames (0, 5, 10), moov before mdat (+faststart). Content: a
                      64x48 window panning over ffmpeg's testsrc2 (3 px right, 1 px down a frame,
                      so odd motion vectors and chroma sub-pel) plus light temporal noise.
  tiny_baseline.yuv   its 12 decoded frames, raw yuv420p (Y, U, V planes per frame).
  tiny_high.mp4       same content, H.264 High (CABAC, 8x8 transform) with 2 B-frames between
                      references (b-adapt=0 forces them); for the "unsupported profile" error.
  tiny_odd.mp4        same content at 62x46, Constrained Baseline: coded 64x48 with SPS frame
                      cropping (right 2, bottom 2). A truly odd size (63x47) cannot be coded in
                      4:2:0 H.264: its crop unit is 2 luma pixels (ffmpeg rounds 63x47 to 62x46).
  tiny_truncated.mp4  tiny_baseline.mp4 cut in the middle of sample 7 (the 8th frame): moov is
                      intact and still lists 12 samples; samples 0-6 are whole.
  tiny_corrupt.mp4    tiny_baseline.mp4 with sample 7's slice NAL units overwritten with 0xFF
                      after their 1-byte NAL header (length prefixes kept, same file size).
  tiny_empty.mp4      a video track with 0 samples. ffmpeg's plain MP4 muxer drops a track
                      without samples (it writes a moov with no trak), so this one is written
                      with -movflags frag_keyframe+empty_moov: ftyp, moov (trak with empty
                      stts/stsc/stsz/stco, plus mvex/trex), mfra; no moof, no mdat.
  tiny.y4m            5 frames 32x24 at 25 fps, YUV4MPEG2 C420jpeg.
  tiny_444.y4m        2 frames 32x24 at 25 fps, YUV4MPEG2 C444 (unsupported colour space).
  tiny_truncated.y4m  tiny.y4m cut in the middle of frame 2 (the 3rd frame's data): 2 whole
                      frames, then a partial one.
  frames/frame_00N.png  4 RGB PNG frames 16x12 (N = 0..3) for the frame-sequence source: a
                      panning testsrc2 window, area-scaled down.
"""

import argparse
import hashlib
import json
import os
import re
import shutil
import struct
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.normpath(os.path.join(HERE, "..", ".."))
OUT = os.path.join(ROOT, "tests", "fixtures", "video")

W, H, FPS, NFRAMES, GOP = 64, 48, 10, 12, 5
# A window panning over testsrc2, with light temporal noise so that P frames carry residuals.
PAN = "testsrc2=size=160x120:rate={fps},crop=w={w}:h={h}:x=3*n:y=n,noise=alls=6:allf=t"
CUT_SAMPLE = 7  # the 8th frame

# Settings common to all the MP4 encodes: no audio, one thread (reproducible), no
# version/metadata tags from the muxer, moov before mdat.
MP4_COMMON = ["-an", "-threads", "1", "-fflags", "+bitexact", "-map_metadata", "-1"]
X264_BASELINE = ["-c:v", "libx264", "-preset", "medium", "-profile:v", "baseline",
                 "-pix_fmt", "yuv420p"]
GOP_ARGS = ["-g", str(GOP), "-keyint_min", str(GOP), "-sc_threshold", "0"]

VTEST_ARGS = ["-an", "-threads", "1", "-c:v", "libx264", "-profile:v", "baseline",
              "-preset", "slow", "-crf", "28", "-pix_fmt", "yuv420p", "-fflags", "+bitexact",
              "-map_metadata", "-1", "-movflags", "+faststart"]


def run(cmd, **kw):
    print("+", " ".join(cmd), file=sys.stderr)
    return subprocess.run(cmd, check=True, **kw)


def ffmpeg(*args):
    run(["ffmpeg", "-hide_banner", "-loglevel", "error", "-y", *args])


def lavfi(expr):
    return ["-f", "lavfi", "-i", expr]


def ffprobe_json(path, *args):
    out = subprocess.run(["ffprobe", "-v", "quiet", "-of", "json", *args, path],
                         check=True, capture_output=True).stdout
    return json.loads(out)


def decode_raw(path, pix_fmt):
    """Decoded frames as ffmpeg outputs them (rawvideo), and ffmpeg's error lines."""
    p = subprocess.run(["ffmpeg", "-hide_banner", "-loglevel", "error", "-i", path,
                        "-fps_mode", "passthrough", "-f", "rawvideo", "-pix_fmt", pix_fmt, "-"],
                       capture_output=True)
    errors = [re.sub(r" @ 0x[0-9a-f]+", "", l) for l in p.stderr.decode().splitlines() if l]
    return p.returncode, p.stdout, errors


def md5(b):
    return hashlib.md5(b).hexdigest()


def sha256_file(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def plane_sizes(pix_fmt, w, h):
    cw, ch = {"yuv420p": ((w + 1) // 2, (h + 1) // 2), "yuv444p": (w, h)}[pix_fmt]
    return [w * h, cw * ch, cw * ch]


def frame_md5s(raw, pix_fmt, w, h):
    """Per frame: md5 of Y||U||V (what ffmpeg's framemd5 prints) and md5 of each plane."""
    sizes = plane_sizes(pix_fmt, w, h)
    fsize = sum(sizes)
    frames, planes = [], []
    for off in range(0, len(raw) - fsize + 1, fsize):
        fr = raw[off:off + fsize]
        frames.append(md5(fr))
        a = 0
        ps = []
        for s in sizes:
            ps.append(md5(fr[a:a + s]))
            a += s
        planes.append(ps)
    return frames, planes


# ---------------------------------------------------------------- MP4 boxes

CONTAINERS = {b"moov", b"trak", b"mdia", b"minf", b"stbl", b"edts", b"dinf", b"mvex"}


def boxes(data, start, end):
    off = start
    while off + 8 <= end:
        size, kind = struct.unpack(">I4s", data[off:off + 8])
        hdr = 8
        if size == 1:
            size = struct.unpack(">Q", data[off + 8:off + 16])[0]
            hdr = 16
        elif size == 0:
            size = end - off
        yield kind, off, hdr, size
        off += size


def find_box(data, start, end, path):
    for kind, off, hdr, size in boxes(data, start, end):
        if kind == path[0]:
            if len(path) == 1:
                return off, hdr, size
            return find_box(data, off + hdr, off + size, path[1:])
    return None


def top_level(data):
    return [(k.decode("latin-1"), off, size) for k, off, _, size in boxes(data, 0, len(data))]


def mp4_info(data):
    """Sample table of the first video track: what a demuxer has to find."""
    trak = None
    moov = find_box(data, 0, len(data), [b"moov"])
    for kind, off, hdr, size in boxes(data, moov[0] + moov[1], moov[0] + moov[2]):
        if kind == b"trak":
            hd = find_box(data, off + hdr, off + size, [b"mdia", b"hdlr"])
            if data[hd[0] + hd[1] + 8:hd[0] + hd[1] + 12] == b"vide":
                trak = (off, hdr, size)
                break
    t0, t1 = trak[0] + trak[1], trak[0] + trak[2]

    def body(path):
        b = find_box(data, t0, t1, path)
        return None if b is None else data[b[0] + b[1]:b[0] + b[2]]

    mdhd = body([b"mdia", b"mdhd"])
    if mdhd[0] == 1:
        timescale, duration = struct.unpack(">IQ", mdhd[20:32])
    else:
        timescale, duration = struct.unpack(">II", mdhd[12:20])
    stbl = [b"mdia", b"minf", b"stbl"]

    def entries(kind, fmt):
        b = body(stbl + [kind])
        if b is None:
            return None
        n = struct.unpack(">I", b[4:8])[0]
        sz = struct.calcsize(fmt)
        return [struct.unpack(fmt, b[8 + i * sz:8 + (i + 1) * sz]) for i in range(n)]

    stsz = body(stbl + [b"stsz"])
    fixed, count = struct.unpack(">II", stsz[4:12])
    sizes = [fixed] * count if fixed else list(
        struct.unpack(">%dI" % count, stsz[12:12 + 4 * count]))
    chunks = entries(b"stco", ">I")
    if chunks is None:
        chunks = entries(b"co64", ">Q")
    chunk_offsets = [c[0] for c in chunks]
    stsc = entries(b"stsc", ">III")
    offsets = []
    s = 0
    for ci, base in enumerate(chunk_offsets):
        per = next(e[1] for e in reversed(stsc) if e[0] <= ci + 1)
        o = base
        for _ in range(per):
            if s >= count:
                break
            offsets.append(o)
            o += sizes[s]
            s += 1
    stts = entries(b"stts", ">II")
    ctts = entries(b"ctts", ">Ii")
    stss = entries(b"stss", ">I")
    elst = None
    e = body([b"edts", b"elst"])
    if e is not None:
        n = struct.unpack(">I", e[4:8])[0]
        if e[0] == 1:
            elst = [list(struct.unpack(">QqHH", e[8 + 20 * i:28 + 20 * i]))[:3] for i in range(n)]
        else:
            elst = [list(struct.unpack(">IiHH", e[8 + 12 * i:20 + 12 * i]))[:3] for i in range(n)]
    stsd = body(stbl + [b"stsd"])
    avcc = None
    entry = stsd[8:]
    esize, ekind = struct.unpack(">I4s", entry[:8])
    # VisualSampleEntry: 8 header + 78 bytes of fields, then its child boxes.
    for kind, off, hdr, size in boxes(entry, 86, esize):
        if kind == b"avcC":
            c = entry[off + hdr:off + size]
            nal_len = (c[4] & 3) + 1
            p = 5
            lists = []
            for mask in (0x1F, 0xFF):  # SPS count (low 5 bits), then PPS count
                k = c[p] & mask
                p += 1
                units = []
                for _ in range(k):
                    n = struct.unpack(">H", c[p:p + 2])[0]
                    units.append(c[p + 2:p + 2 + n].hex())
                    p += 2 + n
                lists.append(units)
            sps, pps = lists
            avcc = {"profile_idc": c[1], "constraint_flags": c[2], "level_idc": c[3],
                    "nal_length_size": nal_len, "sps": sps, "pps": pps}
    return {
        "top_level_boxes": top_level(data),
        "sample_entry": ekind.decode("latin-1"),
        "avcC": avcc,
        "timescale": timescale,
        "media_duration": duration,
        "sample_count": count,
        "sample_sizes": sizes,
        "sample_offsets": offsets,
        "stts": [list(x) for x in stts],
        "ctts": None if ctts is None else [list(x) for x in ctts],
        "sync_samples": None if stss is None else [x[0] - 1 for x in stss],
        "edit_list": elst,
    }


def nal_units(sample, nal_len):
    """(offset in sample, nal unit type, length) of each length-prefixed NAL unit."""
    out = []
    p = 0
    while p + nal_len <= len(sample):
        n = int.from_bytes(sample[p:p + nal_len], "big")
        out.append((p + nal_len, sample[p + nal_len] & 0x1F, n))
        p += nal_len + n
    return out


# ---------------------------------------------------------------- probing

def probe_video(path, pix_fmt=None):
    info = ffprobe_json(path, "-count_frames", "-show_streams", "-show_format")
    v = [s for s in info.get("streams", []) if s.get("codec_type") == "video"]
    rec = {"file_size": os.path.getsize(path), "sha256": sha256_file(path),
           "format_name": info["format"]["format_name"],
           "nb_streams": info["format"]["nb_streams"]}
    if not v:
        rec["video_stream"] = None
        return rec
    s = v[0]
    keys = ["codec_name", "profile", "level", "width", "height", "coded_width", "coded_height",
            "pix_fmt", "has_b_frames", "refs", "r_frame_rate", "avg_frame_rate", "time_base",
            "start_pts", "duration_ts", "duration", "nb_frames", "nb_read_frames"]
    rec["video_stream"] = {k: s[k] for k in keys if k in s}
    fr = ffprobe_json(path, "-select_streams", "v:0", "-show_frames", "-show_entries",
                      "frame=pts,pts_time,best_effort_timestamp,pict_type,key_frame")
    rec["frames"] = [{"pts": f.get("pts", f.get("best_effort_timestamp")),
                      "pts_time": float(f["pts_time"]) if "pts_time" in f else None,
                      "pict_type": f.get("pict_type"), "key_frame": f.get("key_frame")}
                     for f in fr.get("frames", [])]
    rec["pts_seconds"] = [f["pts_time"] for f in rec["frames"]]
    pk = ffprobe_json(path, "-select_streams", "v:0", "-show_packets", "-show_entries",
                      "packet=pts,dts,size,pos,flags")
    rec["packets_decode_order"] = [
        {"pts": p.get("pts"), "dts": p.get("dts"), "size": int(p["size"]),
         "pos": int(p["pos"]) if p.get("pos") not in (None, "N/A") else None,
         "key": "K" in p.get("flags", "")} for p in pk.get("packets", [])]
    if pix_fmt:
        rc, raw, errors = decode_raw(path, pix_fmt)
        w, h = s["width"], s["height"]
        fm, pm = frame_md5s(raw, pix_fmt, w, h)
        rec["decoded"] = {"pix_fmt": pix_fmt, "ffmpeg_exit_code": rc, "frames": len(fm),
                          "bytes": len(raw), "trailing_bytes": len(raw) - len(fm) * sum(
                              plane_sizes(pix_fmt, w, h)),
                          "ffmpeg_errors": errors, "frame_md5": fm, "plane_md5": pm}
    return rec


# ---------------------------------------------------------------- generators

def make_mp4s():
    base = os.path.join(OUT, "tiny_baseline.mp4")
    ffmpeg(*lavfi(PAN.format(fps=FPS, w=W, h=H)), "-frames:v", str(NFRAMES), *MP4_COMMON,
           *X264_BASELINE, *GOP_ARGS, "-movflags", "+faststart", base)
    ffmpeg("-i", base, "-fps_mode", "passthrough", "-f", "rawvideo", "-pix_fmt", "yuv420p",
           os.path.join(OUT, "tiny_baseline.yuv"))
    ffmpeg(*lavfi(PAN.format(fps=FPS, w=W, h=H)), "-frames:v", str(NFRAMES), *MP4_COMMON,
           "-c:v", "libx264", "-preset", "medium", "-profile:v", "high", "-pix_fmt", "yuv420p",
           *GOP_ARGS, "-bf", "2", "-x264-params", "b-adapt=0", "-movflags", "+faststart",
           os.path.join(OUT, "tiny_high.mp4"))
    ffmpeg(*lavfi(PAN.format(fps=FPS, w=62, h=46)), "-frames:v", str(NFRAMES), *MP4_COMMON,
           *X264_BASELINE, *GOP_ARGS, "-movflags", "+faststart",
           os.path.join(OUT, "tiny_odd.mp4"))
    ffmpeg(*lavfi(PAN.format(fps=FPS, w=W, h=H)), "-frames:v", "0", *MP4_COMMON,
           *X264_BASELINE, "-movflags", "frag_keyframe+empty_moov",
           os.path.join(OUT, "tiny_empty.mp4"))

    with open(base, "rb") as f:
        data = f.read()
    info = mp4_info(data)
    off, size = info["sample_offsets"][CUT_SAMPLE], info["sample_sizes"][CUT_SAMPLE]
    cut = off + size // 2
    with open(os.path.join(OUT, "tiny_truncated.mp4"), "wb") as f:
        f.write(data[:cut])
    bad = bytearray(data)
    overwritten = []
    nl = info["avcC"]["nal_length_size"]
    for p, kind, n in nal_units(data[off:off + size], nl):
        if kind in (1, 5):  # coded slice (non-IDR / IDR)
            bad[off + p + 1:off + p + n] = b"\xff" * (n - 1)
            overwritten.append([off + p + 1, n - 1])
    assert len(bad) == len(data)
    with open(os.path.join(OUT, "tiny_corrupt.mp4"), "wb") as f:
        f.write(bad)
    return {
        "tiny_truncated.mp4": {"from": "tiny_baseline.mp4", "cut_sample": CUT_SAMPLE,
                               "sample_offset": off, "sample_size": size, "file_size": cut,
                               "whole_samples": CUT_SAMPLE},
        "tiny_corrupt.mp4": {"from": "tiny_baseline.mp4", "corrupt_sample": CUT_SAMPLE,
                             "sample_offset": off, "sample_size": size,
                             "nal_units": [[t, n] for _, t, n in nal_units(
                                 data[off:off + size], nl)],
                             "overwritten_0xff": overwritten},
    }


def make_y4m():
    y4m = os.path.join(OUT, "tiny.y4m")
    ffmpeg(*lavfi("testsrc2=size=96x72:rate=25,crop=w=32:h=24:x=2*n:y=n"), "-frames:v", "5",
           "-pix_fmt", "yuv420p", "-f", "yuv4mpegpipe", y4m)
    ffmpeg(*lavfi("testsrc2=size=96x72:rate=25,crop=w=32:h=24:x=2*n:y=n"), "-frames:v", "2",
           "-pix_fmt", "yuv444p", "-f", "yuv4mpegpipe", os.path.join(OUT, "tiny_444.y4m"))
    with open(y4m, "rb") as f:
        data = f.read()
    header_len = data.index(b"\n") + 1
    frame_len = len(b"FRAME\n") + 32 * 24 * 3 // 2
    cut_frame = 2
    cut = header_len + cut_frame * frame_len + len(b"FRAME\n") + (frame_len - 6) // 2
    with open(os.path.join(OUT, "tiny_truncated.y4m"), "wb") as f:
        f.write(data[:cut])
    return {"tiny_truncated.y4m": {"from": "tiny.y4m", "cut_frame": cut_frame,
                                   "whole_frames": cut_frame, "header_len": header_len,
                                   "frame_len_with_marker": frame_len, "file_size": cut}}


def make_pngs():
    d = os.path.join(OUT, "frames")
    os.makedirs(d, exist_ok=True)
    ffmpeg(*lavfi("testsrc2=size=160x120:rate=10,crop=w=64:h=48:x=12*n:y=6*n,"
                   "scale=16:12:flags=area"),
           "-frames:v", "4", "-pix_fmt", "rgb24", "-fflags", "+bitexact", "-flags", "+bitexact",
           "-start_number", "0", os.path.join(d, "frame_%03d.png"))
    rec = {}
    for i in range(4):
        name = "frame_%03d.png" % i
        p = os.path.join(d, name)
        s = ffprobe_json(p, "-show_streams")["streams"][0]
        rc, raw, errors = decode_raw(p, "rgb24")
        rec["frames/" + name] = {"file_size": os.path.getsize(p), "sha256": sha256_file(p),
                                 "codec_name": s["codec_name"], "width": s["width"],
                                 "height": s["height"], "pix_fmt": s["pix_fmt"],
                                 "rgb24_md5": md5(raw)}
    return rec


def ffmpeg_version():
    out = subprocess.run(["ffmpeg", "-version"], check=True, capture_output=True).stdout
    return out.decode().splitlines()[0]


def encode_vtest(src):
    dst = os.path.join(ROOT, "assets", "vtest_baseline.mp4")
    ffmpeg("-i", src, *VTEST_ARGS, dst)
    rec = probe_video(dst)
    s = rec["video_stream"]
    print("vtest_baseline.mp4: %d bytes, %s, %dx%d, %s fps, %s frames" % (
        rec["file_size"], s["profile"], s["width"], s["height"], s["r_frame_rate"],
        s["nb_read_frames"]), file=sys.stderr)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--vtest", help="path of OpenCV's vtest.avi: also re-encode "
                    "assets/vtest_baseline.mp4")
    args = ap.parse_args()
    for tool in ("ffmpeg", "ffprobe"):
        if shutil.which(tool) is None:
            sys.exit("%s not found (apt-get install ffmpeg)" % tool)
    if args.vtest:
        encode_vtest(args.vtest)
    os.makedirs(OUT, exist_ok=True)
    derived = make_mp4s()
    derived.update(make_y4m())
    pngs = make_pngs()

    expected = {
        "generator": "tests/reference/make_video_fixtures.py",
        "ffmpeg_version": ffmpeg_version(),
        "notes": "Frame indices are 0-based. pts_seconds and frames[] are in presentation "
                 "order as ffprobe reports them (edit lists applied); packets_decode_order "
                 "are the demuxed packets in file order, in time_base units. decoded.frame_md5 "
                 "is the md5 of each decoded frame's Y, U and V planes concatenated (ffmpeg's "
                 "framemd5); decoded.plane_md5 is [Y, U, V] per frame. mp4 is the sample table "
                 "read directly from the boxes (sample_offsets are absolute file offsets, "
                 "sync_samples 0-based).",
        "files": {},
    }
    files = expected["files"]
    for name in ("tiny_baseline.mp4", "tiny_high.mp4", "tiny_odd.mp4", "tiny_truncated.mp4",
                 "tiny_corrupt.mp4", "tiny_empty.mp4"):
        p = os.path.join(OUT, name)
        rec = probe_video(p, "yuv420p" if name != "tiny_empty.mp4" else None)
        with open(p, "rb") as f:
            data = f.read()
        try:
            rec["mp4"] = mp4_info(data)
        except Exception as e:  # noqa: BLE001 - record why, e.g. for a truncated file
            rec["mp4"] = {"error": repr(e)}
        if name in derived:
            rec["derived"] = derived[name]
        files[name] = rec
    # Which tiny_baseline frame each decoded frame of the damaged copies equals (null: none).
    good = files["tiny_baseline.mp4"]["decoded"]["frame_md5"]
    for name in ("tiny_truncated.mp4", "tiny_corrupt.mp4"):
        files[name]["derived"]["decoded_equals_baseline_frame"] = [
            good.index(m) if m in good else None for m in files[name]["decoded"]["frame_md5"]]
    yuv = os.path.join(OUT, "tiny_baseline.yuv")
    with open(yuv, "rb") as f:
        raw = f.read()
    fm, pm = frame_md5s(raw, "yuv420p", W, H)
    assert fm == files["tiny_baseline.mp4"]["decoded"]["frame_md5"]
    files["tiny_baseline.yuv"] = {"from": "tiny_baseline.mp4", "pix_fmt": "yuv420p",
                                  "width": W, "height": H, "frames": len(fm),
                                  "frame_bytes": W * H * 3 // 2, "file_size": len(raw),
                                  "sha256": sha256_file(yuv), "frame_md5": fm, "plane_md5": pm}
    for name, pix in (("tiny.y4m", "yuv420p"), ("tiny_444.y4m", "yuv444p"),
                      ("tiny_truncated.y4m", "yuv420p")):
        p = os.path.join(OUT, name)
        rec = probe_video(p, pix)
        with open(p, "rb") as f:
            rec["y4m_header"] = f.readline().decode().rstrip("\n")
        if name in derived:
            rec["derived"] = derived[name]
        files[name] = rec
    files.update(pngs)
    with open(os.path.join(OUT, "expected.json"), "w") as f:
        json.dump(expected, f, indent=1)
        f.write("\n")
    for name in sorted(os.listdir(OUT)):
        print(name, file=sys.stderr)


if __name__ == "__main__":
    main()
