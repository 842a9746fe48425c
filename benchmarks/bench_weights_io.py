"""Load time and peak memory of weights_io on a synthetic VGG16-sized checkpoint of each format.

For every format the script writes a file holding VGG16's 138,357,544 float32
parameters (528 MB; random values, real VGG16 names and layouts), then, in a
fresh subprocess each, times

* ``read_tensors`` (views of the memory-mapped file; no tensor data copied),
* ``read_tensors`` + touching every byte (what the page cache costs),
* ``convert`` (one copy per tensor into canonical layouts, the SHA-256 of the
  file included),
* ``ebr-ref convert FILE --out model.npz`` (convert, build the model, write
  the canonical pair): its peak RSS should equal ``convert``'s,

and reports the peak of NumPy/Python heap allocations (``tracemalloc``) and the
process's peak resident set (``VmHWM``; file pages read through the memory map
count there, but they are shared page cache and reclaimable). ``copies`` = peak heap
bytes / parameter bytes: 1.0 means every tensor was copied exactly once.

Writing the files needs the libraries (torch, safetensors, h5py, onnx); reading
does not. Usage::

    python benchmarks/bench_weights_io.py [--formats caffe,torch_zip,...] [--dir /tmp/x] [--keep]

Files are deleted afterwards unless ``--keep``; ~600 MB of disk per format at a time.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy

FORMATS = [
    "caffe",
    "torch_zip",
    "torch_legacy",
    "safetensors",
    "hdf5_keras",
    "keras_v3",
    "onnx",
    "canonical_npz",
]
_BLOCKS = [(1, 64, 2), (2, 128, 2), (3, 256, 3), (4, 512, 3), (5, 512, 3)]


def vgg16_tensors(seed=0):
    """VGG16's parameters (Caffe names, canonical layouts), float32 (~528 MB)."""
    rng = numpy.random.default_rng(seed)
    out, c = {}, 3
    for b, w, n in _BLOCKS:
        for k in range(1, n + 1):
            out[f"conv{b}_{k}.weight"] = rng.standard_normal((w, c, 3, 3), dtype=numpy.float32)
            out[f"conv{b}_{k}.bias"] = rng.standard_normal(w, dtype=numpy.float32)
            c = w
    for name, o, i in (("fc6", 4096, 25088), ("fc7", 4096, 4096), ("fc8", 1000, 4096)):
        out[f"{name}.weight"] = rng.standard_normal((o, i), dtype=numpy.float32)
        out[f"{name}.bias"] = rng.standard_normal(o, dtype=numpy.float32)
    return out


def _varint(n):
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _ld(field, payload_len):
    return _varint(field << 3 | 2) + _varint(payload_len)


def write_caffe(path, params):
    """A V1 caffemodel with legacy 4-d blob dims (like the 2014 VGG16 release), streamed to disk."""
    layers = sorted({k.split(".")[0] for k in params}, key=lambda n: list(params).index(n + ".weight"))
    with open(path, "wb") as f:
        for name in layers:
            blobs = []
            for field in ("weight", "bias"):
                a = params[f"{name}.{field}"]
                dims = (1,) * (4 - a.ndim) + a.shape
                head = b"".join(_varint(k << 3) + _varint(d) for k, d in zip((1, 2, 3, 4), dims))
                data = a.tobytes()
                blobs.append((head + _ld(5, len(data)), data))
            ltype = 4 if name.startswith("conv") else 14
            meta = _ld(4, len(name)) + name.encode() + _varint(5 << 3) + _varint(ltype)
            body_len = len(meta) + sum(len(_ld(6, len(h) + len(d))) + len(h) + len(d) for h, d in blobs)
            f.write(_ld(2, body_len) + meta)
            for h, d in blobs:
                f.write(_ld(6, len(h) + len(d)) + h)
                f.write(d)
    proto = [
        'name: "VGG_ILSVRC_16_layers"\ninput: "data"\ninput_dim: 1\ninput_dim: 3\n'
        "input_dim: 224\ninput_dim: 224"
    ]
    prev = "data"
    for b, w, n in _BLOCKS:
        for k in range(1, n + 1):
            nm = f"conv{b}_{k}"
            proto.append(
                f'layers {{ bottom: "{prev}" top: "{nm}" name: "{nm}" type: CONVOLUTION '
                f"convolution_param {{ num_output: {w} pad: 1 kernel_size: 3 }} }}"
            )
            proto.append(f'layers {{ bottom: "{nm}" top: "{nm}" name: "relu{b}_{k}" type: RELU }}')
            prev = nm
        proto.append(
            f'layers {{ bottom: "{prev}" top: "pool{b}" name: "pool{b}" type: POOLING '
            "pooling_param { pool: MAX kernel_size: 2 stride: 2 } }"
        )
        prev = f"pool{b}"
    for nm, o in (("fc6", 4096), ("fc7", 4096), ("fc8", 1000)):
        proto.append(
            f'layers {{ bottom: "{prev}" top: "{nm}" name: "{nm}" type: INNER_PRODUCT '
            f"inner_product_param {{ num_output: {o} }} }}"
        )
        prev = nm
    with open(path + ".prototxt", "w") as f:
        f.write("\n".join(proto) + "\n")


def _torchvision_names():
    idx, m = 0, {}
    for b, _w, n in _BLOCKS:
        for k in range(1, n + 1):
            m[f"conv{b}_{k}"] = f"features.{idx}"
            idx += 2
        idx += 1
    m.update(fc6="classifier.0", fc7="classifier.3", fc8="classifier.6")
    return m


def write(fmt, path, params):
    if fmt == "caffe":
        write_caffe(path, params)
    elif fmt in ("torch_zip", "torch_legacy"):
        import torch

        tv = _torchvision_names()
        sd = {f"{tv[k.split('.')[0]]}.{k.split('.')[1]}": torch.from_numpy(v) for k, v in params.items()}
        torch.save(sd, path, _use_new_zipfile_serialization=fmt == "torch_zip")
    elif fmt == "safetensors":
        from safetensors.numpy import save_file

        tv = _torchvision_names()
        save_file({f"{tv[k.split('.')[0]]}.{k.split('.')[1]}": v for k, v in params.items()}, path)
    elif fmt == "hdf5_keras":
        import h5py

        keras = {f"conv{b}_{k}": f"block{b}_conv{k}" for b, _w, n in _BLOCKS for k in range(1, n + 1)}
        keras.update(fc6="fc1", fc7="fc2", fc8="predictions")
        with h5py.File(path, "w") as f:
            f.attrs["layer_names"] = numpy.array([v.encode() for v in keras.values()])
            for c, kn in keras.items():
                W, b = params[f"{c}.weight"], params[f"{c}.bias"]
                if W.ndim == 4:
                    K = W.transpose(2, 3, 1, 0)
                elif c == "fc6":
                    K = W.reshape(4096, 512, 7, 7).transpose(2, 3, 1, 0).reshape(25088, 4096)
                else:
                    K = W.T
                g = f.create_group(kn)
                g.attrs["weight_names"] = numpy.array([f"{kn}_W_1:0".encode(), f"{kn}_b_1:0".encode()])
                g[f"{kn}_W_1:0"] = numpy.ascontiguousarray(K)
                g[f"{kn}_b_1:0"] = b
    elif fmt == "keras_v3":
        write_keras_archive(path, params)
    elif fmt == "onnx":
        import onnx
        from onnx import TensorProto, helper, numpy_helper

        nodes, inits, prev = [], [], "x"
        for b, _w, n in _BLOCKS:
            for k in range(1, n + 1):
                c = f"conv{b}_{k}"
                nodes += [
                    helper.make_node("Conv", [prev, f"{c}.weight", f"{c}.bias"], [c], pads=[1, 1, 1, 1]),
                    helper.make_node("Relu", [c], [c + "_r"]),
                ]
                prev = c + "_r"
            nodes.append(
                helper.make_node("MaxPool", [prev], [f"pool{b}"], kernel_shape=[2, 2], strides=[2, 2])
            )
            prev = f"pool{b}"
        nodes.append(helper.make_node("Flatten", [prev], ["flat"]))
        prev = "flat"
        for c in ("fc6", "fc7", "fc8"):
            nodes.append(helper.make_node("Gemm", [prev, f"{c}.weight", f"{c}.bias"], [c], transB=1))
            prev = c
        inits = [numpy_helper.from_array(v, k) for k, v in params.items()]
        graph = helper.make_graph(
            nodes,
            "vgg16",
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 224, 224])],
            [helper.make_tensor_value_info(prev, TensorProto.FLOAT, [1, 1000])],
            inits,
        )
        onnx.save(helper.make_model(graph), path)
    elif fmt == "canonical_npz":
        sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        from weights_io import save_canonical
        from weights_io.convert_torch import vgg16_layers

        save_canonical(
            path, params, {"architecture": vgg16_layers(1000, ceil_mode=False), "input_shape": [3, 224, 224]}
        )
    else:
        raise ValueError(fmt)


def _keras_vgg16_config():
    """Keras 3's config.json of applications.VGG16 (as a Sequential model)."""
    layers = [{"class_name": "InputLayer", "config": {"batch_shape": [None, 224, 224, 3], "name": "input"}}]
    for b, w, n in _BLOCKS:
        for k in range(1, n + 1):
            layers.append(
                {
                    "class_name": "Conv2D",
                    "config": {
                        "name": f"block{b}_conv{k}",
                        "filters": w,
                        "kernel_size": [3, 3],
                        "strides": [1, 1],
                        "padding": "same",
                        "data_format": "channels_last",
                        "dilation_rate": [1, 1],
                        "groups": 1,
                        "activation": "relu",
                        "use_bias": True,
                    },
                }
            )
        layers.append(
            {
                "class_name": "MaxPooling2D",
                "config": {
                    "name": f"block{b}_pool",
                    "pool_size": [2, 2],
                    "strides": [2, 2],
                    "padding": "valid",
                },
            }
        )
    layers.append({"class_name": "Flatten", "config": {"name": "flatten", "data_format": "channels_last"}})
    for name, units, act in (("fc1", 4096, "relu"), ("fc2", 4096, "relu"), ("predictions", 1000, "softmax")):
        layers.append(
            {
                "class_name": "Dense",
                "config": {"name": name, "units": units, "activation": act, "use_bias": True},
            }
        )
    return {"class_name": "Sequential", "config": {"name": "vgg16", "layers": layers}}


def write_keras_archive(path, params):
    """A Keras 3 ``.keras`` archive of VGG16 (h5py and zipfile; members stored, as Keras does)."""
    import zipfile

    import h5py

    keras = {f"conv{b}_{k}": f"block{b}_conv{k}" for b, _w, n in _BLOCKS for k in range(1, n + 1)}
    keras.update(fc6="fc1", fc7="fc2", fc8="predictions")
    h5 = path + ".weights.h5"
    with h5py.File(h5, "w") as f:
        g = f.create_group("layers")
        for c, kn in keras.items():
            W, b = params[f"{c}.weight"], params[f"{c}.bias"]
            if W.ndim == 4:
                K = W.transpose(2, 3, 1, 0)
            elif c == "fc6":
                K = W.reshape(4096, 512, 7, 7).transpose(2, 3, 1, 0).reshape(25088, 4096)
            else:
                K = W.T
            v = g.create_group(kn).create_group("vars")
            v.attrs["name"] = kn
            v["0"] = numpy.ascontiguousarray(K)
            v["1"] = b
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("metadata.json", json.dumps({"keras_version": "3.15.1"}))
        z.writestr("config.json", json.dumps(_keras_vgg16_config()))
        z.write(h5, "model.weights.h5")
    os.unlink(h5)


def _peak_rss_mb(resource):
    """This process's peak RSS: VmHWM (reset by exec, unlike ru_maxrss, which Linux keeps across exec)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def measure(fmt, path, what):
    """Run in a fresh process: time and peak memory of reading (``what="read"``) or converting ``path``."""
    import resource
    import tracemalloc

    import weights_io

    out = {}
    tracemalloc.start()
    if what == "read":
        t0 = time.perf_counter()
        tensors = weights_io.read_tensors(path)
        out["read_s"] = time.perf_counter() - t0
        out["read_heap_peak_mb"] = tracemalloc.get_traced_memory()[1] / 2**20
        t0 = time.perf_counter()
        for a in tensors.values():  # one byte per page: faults every page of the map in
            if a.size:
                int(numpy.asarray(a).reshape(-1).view(numpy.uint8)[::4096].sum())
        out["read_touch_s"] = out["read_s"] + time.perf_counter() - t0
        out["read_rss_mb"] = _peak_rss_mb(resource)
        return out
    kw = {"caffe": {"prototxt": path + ".prototxt"}, "hdf5_keras": {"source": "keras_vgg16"}}.get(fmt, {})
    if what == "cli":
        from ebr_ref.cli import main

        with tempfile.TemporaryDirectory(prefix="bench-cli-") as d:
            argv = ["convert", path, "--out", os.path.join(d, "m.npz")]
            for k, v in kw.items():
                argv += [f"--{k}", v]
            t0 = time.perf_counter()
            rc = main(argv)
            return {"cli_rc": rc, "cli_s": time.perf_counter() - t0, "cli_rss_mb": _peak_rss_mb(resource)}
    t0 = time.perf_counter()
    params, meta = weights_io.convert(path, **kw)
    out["convert_s"] = time.perf_counter() - t0
    peak = tracemalloc.get_traced_memory()[1]
    nbytes = sum(p.nbytes for p in params.values())
    out["file_mb"] = os.path.getsize(path) / 2**20
    out["param_mb"] = nbytes / 2**20
    out["convert_heap_peak_mb"] = peak / 2**20
    out["copies"] = peak / nbytes
    out["convert_rss_mb"] = _peak_rss_mb(resource)
    out["n_params"] = len(params)
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--formats", default=",".join(FORMATS))
    ap.add_argument("--dir", default=None)
    ap.add_argument("--keep", action="store_true")
    ap.add_argument("--measure", nargs=3, metavar=("FORMAT", "PATH", "WHAT"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.measure:
        print(json.dumps(measure(*args.measure)))
        return
    d = args.dir or tempfile.mkdtemp(prefix="bench-wio-")
    params = vgg16_tensors()
    print(
        f"{'format':15s} {'file MB':>8s} {'read s':>7s} {'read+touch s':>12s} {'convert s':>9s} "
        f"{'heap peak MB':>12s} {'copies':>6s} {'RSS MB':>7s} {'CLI RSS MB':>10s}"
    )
    for fmt in args.formats.split(","):
        ext = {
            "caffe": ".caffemodel",
            "torch_zip": ".pth",
            "torch_legacy": ".pth",
            "safetensors": ".safetensors",
            "hdf5_keras": ".h5",
            "keras_v3": ".keras",
            "onnx": ".onnx",
            "canonical_npz": ".npz",
        }[fmt]
        path = os.path.join(d, f"vgg16_{fmt}{ext}")
        t0 = time.perf_counter()
        write(fmt, path, params)
        wt = time.perf_counter() - t0
        r = {}
        for what in ("read", "convert") + (("cli",) if fmt != "canonical_npz" else ()):
            res = subprocess.run(
                [sys.executable, os.path.abspath(__file__), "--measure", fmt, path, what],
                capture_output=True,
                text=True,
            )
            if res.returncode:
                print(f"{fmt}: {what} failed\n{res.stderr[-2000:]}")
                break
            r.update(json.loads(res.stdout.strip().splitlines()[-1]))
        else:
            cli = f"{r['cli_rss_mb']:10.0f}" if "cli_rss_mb" in r else f"{'-':>10s}"
            print(
                f"{fmt:15s} {r['file_mb']:8.0f} {r['read_s']:7.3f} {r['read_touch_s']:12.3f} "
                f"{r['convert_s']:9.3f} {r['convert_heap_peak_mb']:12.0f} {r['copies']:6.2f} "
                f"{r['convert_rss_mb']:7.0f} {cli}   (written in {wt:.1f} s)"
            )
        if not args.keep:
            for p in (path, path + ".prototxt", path + ".json", os.path.splitext(path)[0] + ".json"):
                if os.path.exists(p):
                    os.unlink(p)


if __name__ == "__main__":
    main()
