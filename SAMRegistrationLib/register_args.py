"""The options of ``samreg register``, shared with ``samreg batch`` (whose every row is one
``samreg register`` command), and the cheap checks that turn them into a run.

No heavy imports at module level: ``samreg --help`` stays fast.
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, Callable

from .cli_params import add_parameter_options, parameter_values
from .errors import InputError
from .worker import check_input_files, parse_labels, validate_names

#: options that map one to one onto :class:`~SAMRegistrationLib.settings.Settings` fields
SETTING_OPTIONS = ("encoder", "method", "checkpoint", "device", "affine", "spacing", "fixed_modality",
                   "moving_modality", "use_cache", "cache_dir", "threads")

#: the per-pair file options, by destination (also the optional columns of a batch table)
PAIR_FILE_OPTIONS = ("fixed_seg", "moving_seg", "fixed_landmarks", "moving_landmarks", "moving_prompts",
                     "moving_negative_prompts", "fixed_prompts", "fixed_negative_prompts")


def positive(kind: Callable, allow_zero: bool = False) -> Callable[[str], Any]:
    """An argparse type: a number of ``kind`` that is > 0 (or >= 0)."""
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        if value < 0 or (value == 0 and not allow_zero):
            raise argparse.ArgumentTypeError(f"must be {'>= 0' if allow_zero else '> 0'}, got {text}")
        return value
    return parse


def add_setting_options(parser: argparse.ArgumentParser) -> None:
    """Method, grid and run options, and every plug-in parameter (``samreg register`` and ``batch``)."""
    g = parser.add_argument_group("method")
    g.add_argument("--encoder", help="feature encoder (see `samreg encoders`)")
    g.add_argument("--method", help="registration method (see `samreg methods`)")
    g.add_argument("--checkpoint", metavar="PATH", help="model checkpoint for SAM ViT encoders")
    g.add_argument("--device", choices=("auto", "cpu", "cuda"))
    g.add_argument("--no-affine", dest="affine", action="store_false", default=None,
                   help="skip the built-in affine pre-alignment")
    g = parser.add_argument_group("grid and run")
    g.add_argument("--spacing", type=positive(float), metavar="MM", help="working-grid spacing in mm")
    g.add_argument("--fixed-modality", choices=("auto", "ct", "mr"))
    g.add_argument("--moving-modality", choices=("auto", "ct", "mr"))
    g.add_argument("--no-cache", dest="use_cache", action="store_false", default=None,
                   help="do not read or write the feature cache")
    g.add_argument("--cache-dir", metavar="DIR", help="feature cache folder")
    g.add_argument("--threads", type=positive(int), metavar="N", help="CPU threads")
    add_parameter_options(parser)


def add_pair_options(parser: argparse.ArgumentParser) -> None:
    """FIXED, MOVING, ``-o`` and the optional evaluation and prompt files of one pair."""
    parser.add_argument("fixed", metavar="FIXED", type=Path, help="fixed (reference) image")
    parser.add_argument("moving", metavar="MOVING", type=Path, help="moving image")
    parser.add_argument("-o", "--output", dest="output_dir", metavar="OUTDIR", type=Path, required=True,
                        help="output folder (created if missing)")
    g = parser.add_argument_group("evaluation (optional)")
    g.add_argument("--fixed-seg", type=Path, metavar="PATH", help="fixed label map")
    g.add_argument("--moving-seg", type=Path, metavar="PATH", help="moving label map (warped too)")
    g.add_argument("--labels", metavar="1,2,3", help="labels to evaluate (default: all)")
    g.add_argument("--fixed-landmarks", type=Path, metavar="PATH")
    g.add_argument("--moving-landmarks", type=Path, metavar="PATH")
    g = parser.add_argument_group("point prompts (optional; Slicer .mrk.json, JSON or CSV x,y,z in LPS mm; "
                                  "points sharing a label form one structure)")
    g.add_argument("--moving-prompts", type=Path, metavar="FILE", help="positive clicks in the moving image")
    g.add_argument("--moving-negative-prompts", type=Path, metavar="FILE", help="negative clicks in the moving image")
    g.add_argument("--fixed-prompts", type=Path, metavar="FILE", help="positive clicks in the fixed image")
    g.add_argument("--fixed-negative-prompts", type=Path, metavar="FILE", help="negative clicks in the fixed image")
    g.add_argument("--auto-prompts", type=positive(int), metavar="K", help="sample K prompts automatically")


def prepare_register(args: argparse.Namespace):
    """(RegistrationInputs, Settings) of parsed register options, after the cheap checks (files
    exist, labels and prompt files parse, names known); raises :class:`InputError` otherwise."""
    from .input_checks import check_image_path, check_output_dir   # numpy: not at `samreg --help`
    check_image_path(args.fixed, "fixed")
    check_image_path(args.moving, "moving")
    check_input_files(**{name: getattr(args, name) for name in PAIR_FILE_OPTIONS})
    labels = parse_labels(args.labels)
    from .prompt_files import load_prompt_files
    prompts = load_prompt_files(fixed=args.fixed_prompts, fixed_negative=args.fixed_negative_prompts,
                                moving=args.moving_prompts, moving_negative=args.moving_negative_prompts)
    if args.checkpoint:
        try:
            checkpoint = Path(args.checkpoint).expanduser()
        except RuntimeError:        # '~name' of an unknown user
            raise InputError(f"--checkpoint: cannot find the home folder in {args.checkpoint!r}") from None
        check_input_files(checkpoint=checkpoint)
    check_output_dir(args.output_dir)
    validate_names(args.encoder, args.method)

    from .pipeline import RegistrationInputs
    from .settings import Settings

    overrides = {k: getattr(args, k) for k in SETTING_OPTIONS if getattr(args, k) is not None}
    overrides.update(parameter_values(args))
    settings = Settings.from_dict(overrides)
    inputs = RegistrationInputs(fixed=args.fixed, moving=args.moving, output_dir=args.output_dir,
                                fixed_seg=args.fixed_seg, moving_seg=args.moving_seg, labels=labels,
                                fixed_landmarks=args.fixed_landmarks, moving_landmarks=args.moving_landmarks,
                                prompts=prompts, auto_prompts=args.auto_prompts)
    return inputs, settings
