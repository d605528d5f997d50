"""Other inference runtimes for the LiteMedSAM image encoder, for ``features.speed``'s table only.

    python -m SAMRegistrationLib.features.speed --runtimes

Needs ``onnxruntime`` and ``onnx`` for the ``ort-*`` routes and ``openvino`` for the ``ov-*``
routes (not dependencies of the project: nothing else uses them; a route whose runtime is not
installed shows as failed). The fp32 model (BN folded) is converted in each measuring process:
exported to ONNX and run by ONNX Runtime with all graph optimisations, as exported (fp32) or
quantised to int8 by ONNX Runtime's own quantiser, dynamically (weights int8, activations
quantised per call) or statically (activation ranges calibrated on the measured slices, QDQ
format, VNNI kernels); or converted by OpenVINO from the torch module and compiled for the CPU
with fp32 or bf16 inference precision.
"""
from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path
from typing import Callable

ROUTES = ("ort-fp32", "ort-int8-dynamic", "ort-int8-static", "ov-fp32", "ov-bf16")


def _fp32_model():
    from ..checkpoints import litemedsam_path, load_into, load_state_dict, submodule_state
    from .tinyvit import build_litemedsam_encoder, prepare_for_inference

    weights = litemedsam_path()
    model = build_litemedsam_encoder()
    load_into(model, submodule_state(load_state_dict(weights), "image_encoder.", weights), weights, "LiteMedSAM")
    return prepare_for_inference(model).eval()


def _onnx_session(route: str, tmp: Path, slices, batch: int, h: int, w: int, threads: int) -> Callable:
    """The encoder exported to ONNX (TorchScript exporter, fixed shapes), quantised as ``route`` asks."""
    import onnxruntime as ort
    import torch
    from onnxruntime import quantization as q

    model = tmp / "fp32.onnx"
    with torch.inference_mode():
        torch.onnx.export(_fp32_model(), (torch.zeros(batch, 3, h, w),), str(model), input_names=["image"],
                          output_names=["embedding"], opset_version=17, dynamo=False)
    if route == "ort-int8-dynamic":
        q.quantize_dynamic(str(model), str(tmp / "int8.onnx"), weight_type=q.QuantType.QInt8)
        model = tmp / "int8.onnx"
    elif route == "ort-int8-static":
        # the quantiser leaves scratch files in the working folder: keep them in ``tmp``
        here = os.getcwd()
        os.chdir(tmp)
        try:
            q.quant_pre_process(str(model), str(tmp / "prep.onnx"), skip_symbolic_shape=True)
            q.quantize_static(str(tmp / "prep.onnx"), str(tmp / "int8.onnx"), _calibration_reader(slices, batch),
                              quant_format=q.QuantFormat.QDQ, activation_type=q.QuantType.QUInt8,
                              weight_type=q.QuantType.QInt8, per_channel=True)
        finally:
            os.chdir(here)
        model = tmp / "int8.onnx"
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = threads
    session = ort.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])
    return lambda image: session.run(None, {"image": image})[0]


def _openvino_session(route: str, batch: int, h: int, w: int, threads: int) -> Callable:
    import openvino as ov
    import torch

    converted = ov.convert_model(_fp32_model(), example_input=torch.zeros(batch, 3, h, w))
    hints = {"INFERENCE_PRECISION_HINT": "bf16" if route == "ov-bf16" else "f32",
             "PERFORMANCE_HINT": "LATENCY", "INFERENCE_NUM_THREADS": threads}
    compiled = ov.Core().compile_model(converted, "CPU", hints)
    return lambda image: compiled(image)[0]


def _calibration_reader(slices, batch: int):
    from onnxruntime.quantization import CalibrationDataReader

    class Reader(CalibrationDataReader):
        def __init__(self):
            self._items = iter([{"image": slices[i:i + batch].expand(-1, 3, -1, -1).contiguous().numpy()}
                                for i in range(0, len(slices) - batch + 1, batch)])

        def get_next(self):
            return next(self._items, None)

    return Reader()


def measure(cfg: dict, slices, repeats: int, status_mb) -> tuple[dict, "object"]:
    """Time one route on ``slices`` (N, 1, H, W): (result row, first batch's embeddings)."""
    import numpy as np
    import torch

    route, h, w, batch = cfg["runtime"], cfg["h"], cfg["w"], cfg["batch"]
    threads = cfg.get("threads") or os.cpu_count() or 1
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        run = _openvino_session(route, batch, h, w, threads) if route.startswith("ov-") \
            else _onnx_session(route, Path(tmp), slices, batch, h, w, threads)
        load_s = time.perf_counter() - t0
        rss_load = status_mb("VmRSS")

        def embed(x):
            batches = [run(x[i:i + batch].expand(-1, 3, -1, -1).contiguous().numpy()) for i in range(0, len(x), batch)]
            return torch.from_numpy(np.concatenate(batches))

        t0 = time.perf_counter()
        first = embed(slices[:batch])
        warm_s = time.perf_counter() - t0
        best, best_cpu = float("inf"), float("inf")
        for _ in range(repeats):
            t0, c0 = time.perf_counter(), time.process_time()
            embed(slices)
            best = min(best, time.perf_counter() - t0)
            best_cpu = min(best_cpu, time.process_time() - c0)
    n = len(slices)
    # warm-up counts the conversion (and quantisation) too: a one-off cost, as torch.compile's is
    row = dict(ms_per_slice=1000.0 * best / n, cpu_ms_per_slice=1000.0 * best_cpu / n, warm_s=load_s + warm_s,
               load_s=load_s, rss_load_mb=rss_load, peak_mb=status_mb("VmHWM"), threads=threads)
    return row, first
