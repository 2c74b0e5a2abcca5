"""Writes the small weight files that kernels::weights is tested on (needs torch, safetensors,
numpy).

Run from the repository root: python3 tests/reference/make_weight_fixtures.py
The same state dict is saved in every container torch.save writes, as safetensors, and as
Detectron2-style .pkl pickles of numpy arrays (protocols 2 to 5, a hand-made Python 2 one, and
a hostile one that must be refused).
"""
import os
import pickle
import struct

import numpy as np
import torch
from safetensors.torch import save_file

out = os.path.join("kernels", "tests", "fixtures", "weights")
os.makedirs(out, exist_ok=True)

state = {
    "conv.weight": torch.arange(6, dtype=torch.float32).reshape(2, 3, 1, 1) * 0.5,
    "half": torch.tensor([0.25, -2.0], dtype=torch.float16),
    "bn.num_batches_tracked": torch.tensor(7, dtype=torch.int64).reshape(1),
    # A non-contiguous view: readers must give its logical (row-major) order.
    "transposed": torch.arange(6, dtype=torch.float32).reshape(2, 3).t(),
}
torch.save(state, os.path.join(out, "tiny.pth"))
torch.save(state, os.path.join(out, "tiny_legacy.pth"), _use_new_zipfile_serialization=False)
torch.save({"state_dict": state, "epoch": 3}, os.path.join(out, "tiny_nested.pth"))
# torch.save names the archive's folder after the file's stem and always ends the archive with
# zip64 records (76 bytes) before the classic end record. With a 21-character stem, the first
# central directory header ("<stem>/data.pkl") is 46 + 30 = 76 bytes long too, so the end
# record's "directory size" points at the second header: zip 9.1 to 9.4 take that for the
# directory's start and refuse the file (zip 9.0.4 reads it). kernels pins zip to 9.0.4.
name = "zip64_eocd_coincident"
assert len(name) == 21
torch.save(state, os.path.join(out, name + ".pth"))
save_file({k: v.contiguous() for k, v in state.items()}, os.path.join(out, "tiny.safetensors"))
# Detectron2 / Detectron .pkl checkpoints: pickles of numpy arrays (no torch involved), read by
# the restricted unpickler in kernels/src/weights/numpy_pickle.rs. The same tiny state dict as
# numpy arrays ("transposed" stays a Fortran-ordered view, so it is pickled in Fortran order),
# plus one array of each other dtype the reader converts, big-endian ones included.
arrays = {k: v.numpy() for k, v in state.items()}
assert arrays["transposed"].flags.f_contiguous and not arrays["transposed"].flags.c_contiguous
extra = {
    "extra.f64": np.array([1.5, -0.25, 3.0], dtype=np.float64),
    "extra.i32": np.array([-2, 70000], dtype=np.int32),
    "extra.i16": np.array([-300, 5], dtype=np.int16),
    "extra.i8": np.array([-7, 100], dtype=np.int8),
    "extra.u8": np.array([0, 7, 255], dtype=np.uint8),
    "extra.mask": np.array([True, False, True]),
    "extra.big_endian_i64": np.array([-2, 1 << 40], dtype=">i8"),
    "extra.big_endian_fortran": np.asfortranarray(np.arange(6, dtype=">f4").reshape(2, 3) * 0.5),
}
assert extra["extra.big_endian_fortran"].flags.f_contiguous
model = dict(arrays, **extra)
# What the Detectron2 model zoo ships (detectron2/checkpoint/c2_model_loading.py reads it back).
d2 = {"model": model, "__author__": "Detectron2 Model Zoo", "matching_heuristics": True}
for protocol in (2, 4, 5):
    top = dict(d2)
    if protocol == 4:
        top["iteration"] = np.int64(90000)  # a numpy scalar: not an array, skipped by the reader
    with open(os.path.join(out, f"tiny_d2_p{protocol}.pkl"), "wb") as f:
        pickle.dump(top, f, protocol=protocol)
with open(os.path.join(out, "tiny_blobs.pkl"), "wb") as f:
    pickle.dump({"blobs": arrays, "cfg": "MODEL:\n  TYPE: generalized_rcnn\n"}, f, protocol=2)
with open(os.path.join(out, "tiny_flat.pkl"), "wb") as f:
    pickle.dump(arrays, f, protocol=3)


def py2_str(b, short):
    """A Python 2 str (bytes): SHORT_BINSTRING or BINSTRING."""
    return (b"U" + bytes([len(b)]) if short else b"T" + struct.pack("<i", len(b))) + b


def py2_pickle(blobs):
    """What Python 2's cPickle.dump(..., protocol=2) writes for {"blobs": {name: ndarray}} with
    numpy 1.x (Detectron's Caffe2-era .pkl files): str (bytes) keys and array data, globals
    memoized with BINPUT on first use and fetched with BINGET after."""
    p = bytearray(b"\x80\x02}q\x00" + py2_str(b"blobs", True) + b"}q\x01(")
    memo = {}

    def glob(module, name):
        if (module, name) in memo:
            p.extend(b"h" + bytes([memo[(module, name)]]))
        else:
            memo[(module, name)] = len(memo) + 2
            p.extend(b"c" + module + b"\n" + name + b"\nq" + bytes([memo[(module, name)]]))

    for key, a in blobs.items():
        p.extend(py2_str(key.encode(), True))
        glob(b"numpy.core.multiarray", b"_reconstruct")
        glob(b"numpy", b"ndarray")
        p.extend(b"K\x00\x85" + py2_str(b"b", True) + b"\x87R(K\x01(")
        for d in a.shape:
            p.extend(b"J" + struct.pack("<i", d))
        p.extend(b"t")
        glob(b"numpy", b"dtype")
        p.extend(py2_str(a.dtype.str[1:].encode(), True) + b"K\x00K\x01\x87R")
        p.extend(b"(K\x03" + py2_str(a.dtype.str[:1].encode(), True) + b"NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tb")
        fortran = a.flags.f_contiguous and not a.flags.c_contiguous
        p.extend(b"\x88" if fortran else b"\x89")
        p.extend(py2_str(a.tobytes(order="F" if fortran else "C"), False))
        p.extend(b"tb")
    p.extend(b"us.")
    return bytes(p)


py2 = py2_pickle(arrays)
# Python 3 reads Python 2 pickles of numpy arrays with encoding="latin1" (as Detectron2 does).
back = pickle.loads(py2, encoding="latin1")["blobs"]
assert sorted(back) == sorted(arrays)
for k, a in arrays.items():
    assert back[k].dtype == a.dtype and back[k].shape == a.shape and (back[k] == a).all(), k
with open(os.path.join(out, "tiny_py2.pkl"), "wb") as f:
    f.write(py2)

# A hostile pickle: {"model": {"conv.weight": os.system(...)}}. Unpickling it with Python
# would run the command; the reader must refuse the global without calling anything. It is
# never loaded here.
cmd = b"echo ran > /tmp/kernels-hostile-pkl-ran"
hostile = (
    b"\x80\x02}q\x00X\x05\x00\x00\x00modelq\x01}q\x02X\x0b\x00\x00\x00conv.weightq\x03"
    + b"cos\nsystem\nq\x04X" + struct.pack("<I", len(cmd)) + cmd + b"\x85Rq\x05ss."
)
with open(os.path.join(out, "hostile.pkl"), "wb") as f:
    f.write(hostile)

print("wrote", sorted(os.listdir(out)))
