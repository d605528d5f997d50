"""3D prompt decoding with LiteMedSAM's prompt decoder: a click becomes a region that ends
where the structure ends."""
from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from helpers import ELLIPSOID_FIRST, ELLIPSOID_LAST, ellipsoid_volume
from SAMRegistrationLib.errors import InputError
from SAMRegistrationLib.prompting.decoder import PromptDecoder
from SAMRegistrationLib.prompts import Structure, group_structures
from SAMRegistrationLib.prompting.segment import (RegionSegmenter, regions_on_image,
                                                  slice_canvas)
from SAMRegistrationLib.settings import Settings
from SAMRegistrationLib.volume import normalise_intensity

@pytest.fixture(scope="module")
def canvas_and_truth(tmp_path_factory):
    image, blob, centre = ellipsoid_volume()
    image01, _ = normalise_intensity(image, "auto")
    settings = Settings(cache_dir=str(tmp_path_factory.mktemp("cache")), encoder_params={"slice_step": 1})
    return image01, slice_canvas(image01, settings), blob, centre


@pytest.fixture(scope="module")
def decoder():
    return PromptDecoder()


def test_a_click_becomes_a_region_that_stops_at_the_structure_end(canvas_and_truth, decoder):
    image01, canvas, blob, centre = canvas_and_truth
    structure = Structure("blob", positive=[centre])
    labels, infos = regions_on_image(image01, canvas, RegionSegmenter(decoder), [structure])
    region = sitk.GetArrayFromImage(labels) == 1
    dice = 2 * (region & blob).sum() / (region.sum() + blob.sum())
    slices = np.nonzero(region.any(axis=(1, 2)))[0]
    print(f"\nclick -> region: Dice {dice:.3f}, slices {slices.min()}..{slices.max()} (truth {ELLIPSOID_FIRST}..{ELLIPSOID_LAST}), "
          f"info {infos[0]}")
    assert dice > 0.75
    assert ELLIPSOID_FIRST - 1 <= slices.min() <= ELLIPSOID_FIRST + 1 and ELLIPSOID_LAST - 1 <= slices.max() <= ELLIPSOID_LAST + 1
    assert infos[0]["voxels"] == int(region.sum())


def test_point_prompts_alone_give_nothing_so_boxes_are_searched(canvas_and_truth, decoder):
    """The measured reason for the default prompt form: LiteMedSAM's point prompts alone give
    an empty mask where a box search finds the structure."""
    _, canvas, _, centre = canvas_and_truth
    index, xy = canvas.locate(centre)
    points = torch.tensor(xy[None], dtype=torch.float32)
    alone = decoder.decode(canvas.embedding(index), points, torch.tensor([1]), multimask=True)
    searched = RegionSegmenter(decoder, "box-search")._first(canvas, Structure("b", [centre]), index)
    assert int((searched.logits > 0).sum()) > 10 * max(int((alone.logits > 0).sum()), 1)


def test_structures_are_grouped_by_label():
    points = [{"position": [0, 0, 0], "positive": True, "label": "liver"},
              {"position": [5, 0, 0], "positive": True, "label": "liver"},
              {"position": [50, 0, 0], "positive": True, "label": None},
              {"position": [48, 0, 0], "positive": False, "label": "N-1"},
              {"position": [1, 0, 0], "positive": False, "label": "liver"}]
    groups = {g.label: g for g in group_structures(points, "moving")}
    assert set(groups) == {"liver", "moving-3"}
    assert len(groups["liver"].positive) == 2 and len(groups["liver"].negative) == 1
    assert len(groups["moving-3"].negative) == 1          # the unlabelled negative joins the nearest
    with pytest.raises(InputError, match="negative points only"):
        group_structures([{"position": [0, 0, 0], "positive": False, "label": None}], "fixed")


@pytest.mark.slow
def test_promptreg_with_moving_clicks_finds_writes_and_scores_both_regions(tmp_path):
    from phantom import translated
    from SAMRegistrationLib.pipeline import RegistrationInputs, register
    image, blob, centre = ellipsoid_volume()
    moving = translated(image, (4.0, -3.0, 3.0))
    truth = sitk.GetImageFromArray(blob.astype(np.uint8))
    truth.CopyInformation(image)
    sitk.WriteImage(image, str(tmp_path / "fixed.nii.gz"))
    sitk.WriteImage(moving, str(tmp_path / "moving.nii.gz"))
    sitk.WriteImage(truth, str(tmp_path / "fixed_seg.nii.gz"))
    sitk.WriteImage(translated(truth, (4.0, -3.0, 3.0)) > 0.5, str(tmp_path / "moving_seg.nii.gz"))
    click = (np.asarray(centre) + [4.0, -3.0, 3.0]).tolist()
    prompts = {"fixed": [], "moving": [{"position": click, "positive": True, "label": "blob"}]}
    report = register(RegistrationInputs(tmp_path / "fixed.nii.gz", tmp_path / "moving.nii.gz", tmp_path / "out",
                                         fixed_seg=tmp_path / "fixed_seg.nii.gz", moving_seg=tmp_path / "moving_seg.nii.gz",
                                         prompts=prompts),
                      Settings(encoder="mind", method="promptreg", cache_dir=str(tmp_path / "cache"), prompt_params={"slice_step": 1},
                               method_params={"iterations": 20}))
    regions = sitk.ReadImage(str(tmp_path / "out" / "moving_regions.nii.gz"))
    assert regions.GetSize() == moving.GetSize()
    assert sitk.ReadImage(str(tmp_path / "out" / "fixed_regions.nii.gz")).GetSize() == image.GetSize()
    for side in ("moving", "fixed"):            # clicked in the moving image, found in the fixed one
        quality = report["metrics"]["regions"][side]
        assert quality[0]["region"] == "blob" and quality[0]["label"] == 1 and quality[0]["dice"] > 0.75, quality
    assert report["resolved"]["regions"]["fixed"][0]["found_by"] == "correspondence"
    for side in ("moving", "fixed"):            # an object in both images, so the pair is used
        assert report["resolved"]["regions"][side][0]["edge"] >= 1.25, report["resolved"]["regions"][side]
    assert report["resolved"]["method"]["regions"] == 1
    (pair,) = report["metrics"]["region_pairs"]           # the regions brought together
    assert pair["region"] == "blob" and pair["dice"] > 0.75 and pair["dice"] >= pair["dice_affine"] - 0.02, pair
    assert report["metrics"]["dice_mean"] > report["metrics"]["initial"]["dice_mean"] + 0.1

    # no clicks at all: --auto-prompts samples them in the moving image (the cache makes this cheap)
    auto = register(RegistrationInputs(tmp_path / "fixed.nii.gz", tmp_path / "moving.nii.gz", tmp_path / "auto",
                                       fixed_seg=tmp_path / "fixed_seg.nii.gz", moving_seg=tmp_path / "moving_seg.nii.gz",
                                       auto_prompts=2),
                    Settings(encoder="mind", method="promptreg", cache_dir=str(tmp_path / "cache"), prompt_params={"slice_step": 1},
                             method_params={"iterations": 20}))
    assert [p["label"] for p in auto["resolved"]["auto_prompts"]] == ["auto-1", "auto-2"]
    for side in ("moving", "fixed"):
        assert [r["label"] for r in auto["resolved"]["regions"][side]] == ["auto-1", "auto-2"]
        assert (tmp_path / "auto" / f"{side}_regions.nii.gz").is_file()
    assert auto["metrics"]["dice_mean"] > auto["metrics"]["initial"]["dice_mean"]


@pytest.mark.parametrize("views", [(), pytest.param(("flip-cols",), marks=pytest.mark.slow)])
def test_a_region_is_found_again_in_a_shifted_image(canvas_and_truth, decoder, tmp_path, views):
    """PromptReg's inverse prompt: segmented in the moving image, the structure is found in the
    fixed one (shifted by 8/-6/6 mm, no affine given) and segmented there; also with the
    similarity marginalised over a flipped view of both images' slices."""
    from phantom import translated
    from SAMRegistrationLib.prompting.correspond import find_click
    fixed01, fixed_canvas, blob, centre = canvas_and_truth
    shift = np.array([8.0, -6.0, 6.0])
    moving01 = translated(fixed01, shift)
    settings = Settings(cache_dir=str(tmp_path), encoder_params={"slice_step": 1})
    moving_canvas = slice_canvas(moving01, settings)
    segmenter = RegionSegmenter(decoder)
    moving_mask, _ = segmenter.segment(moving_canvas, Structure("blob", [centre + shift]))
    pairs = [(slice_canvas(moving01, settings, view=v), slice_canvas(fixed01, settings, view=v)) for v in views]
    match = find_click(moving_canvas, moving_mask, fixed_canvas, sitk.Transform(), views=pairs)
    index = np.round(fixed01.TransformPhysicalPointToContinuousIndex(tuple(match.click))).astype(int)
    assert blob[index[2], index[1], index[0]], f"the found click {match.click} is not inside the structure"
    from SAMRegistrationLib.prompting.pairs import half_size_mm
    hint = half_size_mm(moving_canvas, moving_mask)          # as paired_regions does
    labels, _ = regions_on_image(fixed01, fixed_canvas, segmenter, [Structure("blob", [match.click], half_size_mm=hint)])
    region = sitk.GetArrayFromImage(labels) == 1
    dice = 2 * (region & blob).sum() / (region.sum() + blob.sum())
    print(f"\nfound again: click {np.round(match.click, 1)} (similarity {match.similarity:.2f}), Dice {dice:.3f}")
    assert dice > 0.75


def test_a_found_region_must_lead_back_to_its_source(canvas_and_truth, decoder, tmp_path):
    """Mutual check: the blob found in the shifted image leads back to the clicked blob; a
    patch of plain body texture elsewhere does not."""
    from phantom import translated
    from SAMRegistrationLib.prompting.correspond import find_click
    from SAMRegistrationLib.prompting.pairs import _matches_back
    fixed01, fixed_canvas, blob, centre = canvas_and_truth
    shift = np.array([8.0, -6.0, 6.0])
    moving_canvas = slice_canvas(translated(fixed01, shift), Settings(cache_dir=str(tmp_path), encoder_params={"slice_step": 1}))
    segmenter = RegionSegmenter(decoder)
    canvases = {"fixed": fixed_canvas, "moving": moving_canvas}
    identity = {"fixed": sitk.Transform(), "moving": sitk.Transform()}
    moving_mask, _ = segmenter.segment(moving_canvas, Structure("blob", [centre + shift]))
    match = find_click(moving_canvas, moving_mask, fixed_canvas, sitk.Transform())
    fixed_mask, _ = segmenter.segment(fixed_canvas, Structure("blob", [match.click]))
    ok, distance = _matches_back(canvases, "fixed", fixed_mask, moving_mask, identity)
    assert ok, distance
    body = np.zeros_like(fixed_mask)                  # canvas layout (slice, row, column)
    body[5:9, 150:180, 60:90] = True                  # body texture, away from the blob
    ok, distance = _matches_back(canvases, "fixed", body, moving_mask, identity)
    assert not ok and distance > 5.0, distance


def test_clicks_on_several_slices_all_count(canvas_and_truth, decoder):
    """Two clicks on different slices: decoding starts on the first click's slice, the region
    spans both clicked slices and still ends where the structure ends."""
    image01, canvas, blob, centre = canvas_and_truth
    low = np.array(image01.TransformContinuousIndexToPhysicalPoint((46.0, 36.0, ELLIPSOID_FIRST + 2.0)))
    high = np.array(image01.TransformContinuousIndexToPhysicalPoint((46.0, 36.0, ELLIPSOID_LAST - 2.0)))
    mask, info = RegionSegmenter(decoder).segment(canvas, Structure("blob", [low, high]))
    assert info["start_slice"] == canvas.locate(low)[0]
    first, last = info["slices"]
    assert first <= canvas.locate(low)[0] and last >= canvas.locate(high)[0]
    assert ELLIPSOID_FIRST - 1 <= first and last <= ELLIPSOID_LAST + 1, info["slices"]


def test_hausdorff_discrepancy_names_the_leak_and_the_miss():
    from SAMRegistrationLib.prompting.pairs import hausdorff_discrepancy
    grid = np.stack(np.meshgrid(np.arange(10.0), np.arange(10.0), np.arange(3.0), indexing="ij"), -1).reshape(-1, 3)
    leak = np.array([[40.0, 5.0, 1.0]])                  # the found region reaches far beyond the source
    to_found, to_source, _, leaked = hausdorff_discrepancy(grid, np.vstack([grid, leak]))
    assert to_found == 0.0 and to_source == pytest.approx(31.0) and leaked.tolist() == leak[0].tolist()
    half = grid[grid[:, 0] < 5]                          # the found region misses half the source
    to_found, to_source, missed, _ = hausdorff_discrepancy(grid, half)
    assert to_source == 0.0 and to_found == pytest.approx(5.0) and missed[0] == 9.0


def test_prompt_views_are_checked_by_name():
    from SAMRegistrationLib.prompting.pairs import marginalisation_views
    assert marginalisation_views(Settings()) == ["flip-cols"]
    assert marginalisation_views(Settings(prompt_params={"views": []})) == []
    assert marginalisation_views(Settings.parse({"prompt_params": {"views": "zoom-out"}})) == ["zoom-out"]
    assert marginalisation_views(Settings(prompt_params={"views": ["flip-rows", "rot180"]})) == ["flip-rows", "rot180"]
    with pytest.raises(InputError, match="setting 'prompt_params.views.0'.*flip-cols.*got 'mirror'"):
        Settings.parse({"prompt_params": {"views": ["mirror"]}})
