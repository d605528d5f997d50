"""SAMRegistration's own methods in the benchmark: every registered method with each encoder.

A method id reads ``samreg/<method>/<encoder>``; the suffix ``@warm`` re-runs it with the
feature cache its cold run filled, which is how a second registration of the same images
(e.g. after changing a setting) performs.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import SimpleITK as sitk

from .cases import Case
from .peers import PeerResult

BENCH_ENCODERS = ("litemedsam", "mind", "litemedsam+mind", "auto")
WARM = "@warm"


@dataclass(frozen=True)
class OurMethod:
    method: str
    encoder: str
    warm: bool = False

    @property
    def id(self) -> str:
        return f"samreg/{self.method}/{self.encoder}" + (WARM if self.warm else "")

    @property
    def cold_id(self) -> str:
        return f"samreg/{self.method}/{self.encoder}"

    @property
    def label(self) -> str:
        return f"SAMReg {self.method} {self.encoder}" + (" (warm cache)" if self.warm else "")

    @classmethod
    def parse(cls, method_id: str) -> Optional["OurMethod"]:
        if not method_id.startswith("samreg/"):
            return None
        body, warm = (method_id[:-len(WARM)], True) if method_id.endswith(WARM) else (method_id, False)
        parts = body.split("/")
        if len(parts) != 3 or not all(parts):
            return None
        return cls(parts[1], parts[2], warm)


def our_methods(default_encoder: str, default_method: str) -> list[OurMethod]:
    """Every registered method with the benchmark encoders, plus the default re-run warm."""
    from ..plugins import method_names, prompt_methods

    # the cases have no clicks, so methods that need point prompts are not benchmarked here
    methods = [OurMethod(m, e) for m in sorted(set(method_names()) - prompt_methods()) for e in BENCH_ENCODERS]
    methods.append(OurMethod(default_method, default_encoder, warm=True))
    return methods


def run_ours(spec: OurMethod, case: Case, workdir: Path, threads: int, cache_dir: Path,
             overrides: Optional[dict] = None, cache_state: str = "") -> PeerResult:
    """Run the pipeline exactly as ``samreg register`` would, with the feature cache in ``cache_dir``."""
    from ..pipeline import RegistrationInputs, register
    from ..report_schema import Report
    from ..settings import Settings

    settings = Settings.from_dict({"method": spec.method, "encoder": spec.encoder, "threads": threads,
                                   "cache_dir": str(cache_dir), **(overrides or {})})
    out = workdir / "samreg-output"
    report = Report.from_dict(register(RegistrationInputs(fixed=Path(case.fixed), moving=Path(case.moving),
                                                          output_dir=out), settings))
    timings = report.timings
    field = sitk.ReadImage(str(out / "displacement.nrrd"), sitk.sitkVectorFloat64)
    note = "defaults" if not overrides else "settings " + ", ".join(f"{k}={v}" for k, v in overrides.items())
    note += f"; {cache_state}" if cache_state else ""
    choice = report.resolved.encoder.get("auto")
    if choice:
        note += f"; auto chose {choice['chosen']} (intensity correlation {choice['intensity_correlation']})"
    note += f"; registration = affine {timings.affine_s:.1f} + encode {timings.encode_s:.1f}" \
            f" + optimise {timings.optimise_s:.1f} s"
    return PeerResult(field, timings.registration_s, note)
