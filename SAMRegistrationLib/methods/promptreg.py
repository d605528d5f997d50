"""Method ``promptreg``: point-prompt regions drive a dense field (after "Register Anything:
Estimating 'Corresponding Prompts' for Segment Anything Model" (PromptReg; Huang, Xu, Yan,
Barratt, Hu), and the contour loss of "Medical Image Registration Meets Vision Foundation
Model: Prototype Learning and Contour Awareness", IPMI 2025).

``convexadam`` on the same features, with region terms added to its Adam stage, which then
optimises the feature SSD of ``convexadam`` (so anatomy outside the regions still registers),
a soft Dice per region pair, optionally the contour Chamfer term, the click-pair distances
for structures clicked in both images, and diffusion regularisation
(:mod:`SAMRegistrationLib.prompting.region_losses`); folds are repaired as in ``convexadam``.

Region pairs that the convex stage's field contradicts (Dice < ``MIN_PAIR_AGREEMENT``) are
left out: such a pair is more likely a wrong pair or a wrong segmentation than a
mis-registration (brain: a hippocampus click "found" in the cortex would otherwise pull the
hippocampus away). With no usable pair the features alone register the images, which is
reported.
"""
from __future__ import annotations

from pydantic import Field

from ..errors import InputError
from ..plugins import MethodPlugin
from .convexadam import ConvexAdamParams, resolved, result_of

MIN_PAIR_AGREEMENT = 0.5


class PromptRegParams(ConvexAdamParams):
    """ConvexAdam's parameters plus the weights of the prompt terms."""

    dice_weight: float = Field(0.3, ge=0.0, le=100.0, description="per-region soft Dice (mean over regions) "
                                                                  "against the feature SSD; 1.0 gave acdc067 "
                                                                  "0.904 but its reversed pair 0.785 (0.835 at 0.3)")
    contour_weight: float = Field(
        0.0, ge=0.0, le=100.0, description="contour Chamfer term, per squared working voxel; off: on acdc067 "
                                           "0.882 without, 0.867 at 0.001 (it follows a region's segmentation errors)")
    landmark_weight: float = Field(0.01, ge=0.0, le=100.0, description="click-pair distance, per squared working "
                                                                       "voxel (not tuned: no case has clicks in both "
                                                                       "images)")


def run(problem, params: PromptRegParams):
    import torch.nn.functional as F

    from ..optimisers import convex_adam
    from ..prompting.region_losses import landmark_loss, pair_agreement, region_loss

    regions, landmarks = problem.regions, problem.landmarks
    if regions is None and landmarks is None:
        raise InputError("the promptreg method needs point prompts (--moving-prompts and/or --fixed-prompts) "
                         "or --auto-prompts K")
    params = resolved(problem, params)

    def factory(init, factor: int):
        """Regions onto the Adam grid (padded like the features, then pooled), pairs checked
        against the convex stage's field, and the loss of the pairs that agree, plus the
        click-pair landmarks."""
        shape = [n * factor for n in init.shape[-3:]]
        terms, info = [], {"regions": 0, "regions_used": 0}
        if landmarks is not None and params.landmark_weight > 0:
            terms.append(landmark_loss(landmarks[0].to(init.device), landmarks[1].to(init.device), factor,
                                       params.landmark_weight))
            info["landmark_pairs"] = int(landmarks[0].shape[0])

        def on_adam_grid(r):
            pads = []
            for n, target in zip(reversed(r.shape[-3:]), reversed(shape)):
                pads += [0, target - n]
            padded = F.pad(r[None].float().to(init.device), pads)
            return (F.avg_pool3d(padded, factor) if factor > 1 else padded)[0]

        if regions is not None and regions[0].shape[0] > 0:
            fixed_regions, moving_regions = on_adam_grid(regions[0]), on_adam_grid(regions[1])
            agreement = pair_agreement(init, fixed_regions, moving_regions)
            keep = agreement >= MIN_PAIR_AGREEMENT
            info.update({"regions": int(regions[0].shape[0]), "regions_used": int(keep.sum()),
                         "region_agreement": [round(float(a), 3) for a in agreement]})
            if bool(keep.any()):
                terms.append(region_loss(fixed_regions[keep], moving_regions[keep], params.dice_weight,
                                         params.contour_weight))
        if not terms:
            info["note"] = "no usable region pair: convexadam's result"
            return None, info
        return (lambda field: sum(term(field) for term in terms)), info

    fixed, moving = problem.features()
    optimised = convex_adam(fixed, moving, params, problem.reporter, problem.mask, extra_loss_factory=factory)
    return result_of(problem, optimised, params)


PLUGIN = MethodPlugin(
    name="promptreg",
    summary="ConvexAdam guided by the regions and click pairs of point prompts (needs prompts)",
    Params=PromptRegParams,
    run=run,
    needs_prompts=True,
)
