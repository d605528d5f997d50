"""The promptreg method: region pairs move anatomy that the features alone leave in place."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from SAMRegistrationLib.field_ops import warp
from SAMRegistrationLib.grid import Grid
from SAMRegistrationLib.methods import promptreg
from SAMRegistrationLib.optimisers import convex_adam
from SAMRegistrationLib.problem import Problem
from SAMRegistrationLib.prompting.region_losses import _sample_at


def settings(**changes) -> promptreg.PromptRegParams:
    values = dict(grid_sp=3, disp_hw=3, grid_sp_adam=1, lambda_reg=0.3, iterations=40, learning_rate=1.0,
                  ic_iterations=5, repair_folds=True)
    values.update(changes)
    return promptreg.PromptRegParams.parse(values)


def run(fixed, moving, params, regions=None, landmarks=None) -> torch.Tensor:
    """promptreg on a problem whose working grid is the features' own (1.5 mm voxels, so the
    parameters apply as given); returns the field in working voxels and the method's info."""
    import SimpleITK as sitk
    grid = Grid(tuple(reversed(fixed.shape[-3:])), (1.5, 1.5, 1.5), (0.0, 0.0, 0.0), (1, 0, 0, 0, 1, 0, 0, 0, 1))
    problem = Problem(grid=grid, fixed_image=None, moving_image=None, affine=sitk.Transform(),
                      mask=torch.ones(fixed.shape[-3:], dtype=torch.bool), device=torch.device("cpu"),
                      reporter=lambda *a: None, encode=lambda: (fixed, moving), regions=regions, landmarks=landmarks)
    result = promptreg.run(problem, params)
    return result.field.to_voxels(), result.info


def ball(shape, centre, radius) -> torch.Tensor:
    z, y, x = torch.meshgrid(*(torch.arange(n, dtype=torch.float32) for n in shape), indexing="ij")
    return (((x - centre[0]) ** 2 + (y - centre[1]) ** 2 + (z - centre[2]) ** 2) < radius ** 2).float()


def region_dice(field: torch.Tensor, fixed_mask: torch.Tensor, moving_mask: torch.Tensor) -> float:
    warped = warp(moving_mask[None, None], field)[0, 0]
    return float(2 * (warped * fixed_mask).sum() / (warped.sum() + fixed_mask.sum()))


@pytest.mark.parametrize("extra", [{}, {"contour_weight": 0.01}], ids=["dice", "dice+contour"])
def test_promptreg_improves_region_dice_over_its_initialisation(extra):
    """Identical smooth features (nothing to register for convexadam) and a region that sits
    4 voxels further along x in the moving image: only the region pair can move it."""
    torch.manual_seed(0)
    shape = (30, 30, 30)
    features = F.interpolate(torch.randn(1, 4, 6, 6, 6), size=shape, mode="trilinear")[0]
    fixed_region = ball(shape, (13, 15, 15), 6)
    moving_region = ball(shape, (17, 15, 15), 6)
    start = convex_adam(features, features.clone(), settings())
    before = region_dice(start.displacement, fixed_region, moving_region)
    field, _ = run(features, features.clone(), settings(**extra), regions=(fixed_region[None], moving_region[None]))
    after = region_dice(field, fixed_region, moving_region)
    print(f"\nregion Dice: convexadam {before:.3f} -> promptreg {after:.3f}")
    assert after > before + 0.15
    from SAMRegistrationLib.field_ops import jacobian_det
    assert float((jacobian_det(field) <= 0).float().mean()) == 0.0


def test_promptreg_without_regions_is_a_clear_error():
    from SAMRegistrationLib.errors import InputError
    features = torch.zeros(2, 8, 8, 8)
    with pytest.raises(InputError, match="needs point prompts"):
        run(features, features, settings())


def test_promptreg_whose_pairs_were_all_dropped_is_convexadam():
    torch.manual_seed(1)
    features = F.interpolate(torch.randn(1, 4, 5, 5, 5), size=(16, 16, 16), mode="trilinear")[0]
    moving = torch.roll(features, 1, dims=1)
    empty = torch.zeros(0, 16, 16, 16)
    field, info = run(features, moving, settings(iterations=5), regions=(empty, empty))
    reference = convex_adam(features, moving, settings(iterations=5))
    assert torch.allclose(field, reference.displacement, atol=1e-5)
    assert info["regions_used"] == 0 and "no usable region pair" in info["note"]


def test_click_pairs_pull_their_points_together():
    """Nothing to register in the features; one landmark pair 3 voxels apart along y."""
    torch.manual_seed(2)
    features = F.interpolate(torch.randn(1, 4, 5, 5, 5), size=(20, 20, 20), mode="trilinear")[0]
    fixed_point = torch.tensor([[10.0, 9.0, 10.0]])
    moving_point = torch.tensor([[10.0, 12.0, 10.0]])
    for factor in (1, 2):
        field, info = run(features, features.clone(), settings(grid_sp_adam=factor),
                          landmarks=(fixed_point, moving_point))
        carried = fixed_point + _sample_at(field, fixed_point).t()
        before = float((fixed_point - moving_point).norm())
        after = float((carried - moving_point).norm())
        assert after < 0.5 * before, (factor, after)
        assert info["landmark_pairs"] == 1


def test_click_pairs_come_from_structures_clicked_in_both_images():
    from SAMRegistrationLib.prompts import click_pairs
    prompts = {"fixed": [{"position": [0, 0, 0], "positive": True, "label": "LV"},
                         {"position": [2, 0, 0], "positive": True, "label": "LV"},
                         {"position": [9, 9, 9], "positive": True, "label": "RV"}],
               "moving": [{"position": [1, 1, 1], "positive": True, "label": "LV"},
                          {"position": [5, 5, 5], "positive": False, "label": "LV"}]}
    (label, fixed, moving), = click_pairs(prompts)
    assert label == "LV" and fixed.tolist() == [1.0, 0.0, 0.0] and moving.tolist() == [1.0, 1.0, 1.0]
    assert click_pairs({"fixed": [], "moving": prompts["moving"]}) == []
