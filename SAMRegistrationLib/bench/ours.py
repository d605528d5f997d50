"""SAMRegistration's own methods in the benchmark: every registered method with each encoder.

A method id reads ``samreg/<method>/<encoder>``, optionally with settings that differ from the
defaults, ``samreg/<method>/<encoder>?precision=fp32&canvas=192`` (parameters of the encoder,
of the method, or of the run); the suffix ``@warm`` re-runs it with the feature cache its cold
run filled, which is how a second registration of the same images (e.g. after changing a
setting) performs.
"""
from __future__ import annotations

import json
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
    options: tuple[tuple[str, str], ...] = ()     # (name, value) settings given in the id

    @property
    def cold_id(self) -> str:
        query = "&".join(f"{k}={v}" for k, v in self.options)
        return f"samreg/{self.method}/{self.encoder}" + (f"?{query}" if query else "")

    @property
    def id(self) -> str:
        return self.cold_id + (WARM if self.warm else "")

    @property
    def label(self) -> str:
        given = ", ".join(f"{k}={v}" for k, v in self.options)
        return f"SAMReg {self.method} {self.encoder}" + (f" ({given})" if given else "") + \
            (" (warm cache)" if self.warm else "")

    @classmethod
    def parse(cls, method_id: str) -> Optional["OurMethod"]:
        if not method_id.startswith("samreg/"):
            return None
        body, warm = (method_id[:-len(WARM)], True) if method_id.endswith(WARM) else (method_id, False)
        body, _, query = body.partition("?")
        parts = body.split("/")
        if len(parts) != 3 or not all(parts):
            return None
        options = tuple(tuple(item.split("=", 1)) for item in query.split("&") if item) if query else ()
        if any(len(option) != 2 or not all(option) for option in options):
            return None
        return cls(parts[1], parts[2], warm, options)

    def settings(self, **run: object) -> dict:
        """The settings dict of this method id: each option goes to the section whose parameter
        it names (encoder, method, else the run); values read as JSON where they parse."""
        from ..plugins import encoder_plugin, method_plugin
        sections: dict = {"encoder_params": {}, "method_params": {}}
        top: dict = {}
        for name, text in self.options:
            try:
                value = json.loads(text)
            except ValueError:
                value = text
            if name in encoder_plugin(self.encoder).Params.model_fields:
                sections["encoder_params"][name] = value
            elif name in method_plugin(self.method).Params.model_fields:
                sections["method_params"][name] = value
            else:
                top[name] = value
        return {"method": self.method, "encoder": self.encoder, **run, **top,
                **{key: values for key, values in sections.items() if values}}


def our_methods(default_encoder: str, default_method: str) -> list[OurMethod]:
    """Every registered method with the benchmark encoders, plus the default re-run warm."""
    from ..plugins import method_names, method_plugin, prompt_methods
    # the cases have no clicks, so methods that need point prompts are not benchmarked here
    methods = []
    for name in sorted(set(method_names()) - prompt_methods()):
        own = method_plugin(name).own_features        # a method on its own features: once, not per encoder
        methods += [OurMethod(name, own)] if own else [OurMethod(name, e) for e in BENCH_ENCODERS]
    methods.append(OurMethod(default_method, default_encoder, warm=True))
    return methods


def run_ours(spec: OurMethod, case: Case, workdir: Path, threads: int, cache_dir: Path,
             overrides: Optional[dict] = None, cache_state: str = "") -> PeerResult:
    """Run the pipeline exactly as ``samreg register`` would, with the feature cache in ``cache_dir``."""
    from ..pipeline import RegistrationInputs, register
    from ..report_schema import Report
    from ..settings import Settings

    settings = Settings.from_dict({**spec.settings(threads=threads, cache_dir=str(cache_dir)), **(overrides or {})})
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
    own = {k[:-len("_seconds")]: v for k, v in report.resolved.method.items() if k.endswith("_seconds")}
    if own:                                     # the method's own breakdown, e.g. samir's encode / network / refine
        note += " (" + ", ".join(f"{k} {v:.1f}" for k, v in own.items()) + " s)"
    return PeerResult(field, timings.registration_s, note)
