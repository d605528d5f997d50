"""LiteMedSAM's prompt encoder and mask decoder, applied to precomputed slice embeddings.

The modules are segment-anything's (``PromptEncoder``, ``MaskDecoder``, ``TwoWayTransformer``)
with LiteMedSAM's sizes, loaded strictly from the same checkpoint file as the image encoder.
Embeddings may come from any canvas whose sides are multiples of 4 (the image encoder's
stride): the positional encoding and the prompt coordinates are scaled to that canvas.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch

from ..checkpoints import litemedsam_path, load_into, load_state_dict, submodule_state, verify_checkpoint
from ..features.sam_vit import sam_modeling_class

EMBED_DIM = 256
STRIDE = 4


@dataclass
class Decoded:
    logits: torch.Tensor       # (rows, cols) mask logits on the canvas; > 0 is inside
    score: float               # the decoder's own IoU estimate for this mask


class PromptDecoder:
    def __init__(self, checkpoint: Optional[str | Path] = None, device: str | torch.device = "cpu") -> None:
        path = verify_checkpoint(Path(checkpoint)) if checkpoint else litemedsam_path()
        state = load_state_dict(path)
        PromptEncoder = sam_modeling_class("prompt_encoder", "PromptEncoder")
        MaskDecoder = sam_modeling_class("mask_decoder", "MaskDecoder")
        TwoWayTransformer = sam_modeling_class("transformer", "TwoWayTransformer")
        self.prompt_encoder = PromptEncoder(embed_dim=EMBED_DIM, image_embedding_size=(64, 64),
                                            input_image_size=(256, 256), mask_in_chans=16)
        self.mask_decoder = MaskDecoder(num_multimask_outputs=3, transformer_dim=EMBED_DIM, iou_head_depth=3,
                                        iou_head_hidden_dim=256,
                                        transformer=TwoWayTransformer(depth=2, embedding_dim=EMBED_DIM,
                                                                      mlp_dim=2048, num_heads=8))
        load_into(self.prompt_encoder, submodule_state(state, "prompt_encoder.", path), path, "LiteMedSAM prompt encoder")
        load_into(self.mask_decoder, submodule_state(state, "mask_decoder.", path), path, "LiteMedSAM mask decoder")
        self.device = torch.device(device)
        self.prompt_encoder.eval().to(self.device)
        self.mask_decoder.eval().to(self.device)

    @torch.inference_mode()
    def decode(self, embedding: torch.Tensor, points: Optional[torch.Tensor] = None,
               labels: Optional[torch.Tensor] = None, box: Optional[torch.Tensor] = None,
               multimask: bool = False) -> Decoded:
        """Decode one mask from a (256, h, w) embedding.

        ``points`` (N, 2) are (column, row) canvas pixel indices with ``labels`` (N,) 1 for
        positive and 0 for negative; ``box`` is (col0, row0, col1, row1). With ``multimask``
        the best of the decoder's three masks by its IoU estimate is returned.
        """
        h, w = embedding.shape[-2:]
        encoder = self.prompt_encoder
        encoder.image_embedding_size = (h, w)
        encoder.input_image_size = (h * STRIDE, w * STRIDE)
        point_arg = None
        if points is not None and len(points):
            point_arg = (points.reshape(1, -1, 2).float().to(self.device),
                         labels.reshape(1, -1).to(self.device, torch.int64))
        box_arg = box.reshape(1, 4).float().to(self.device) if box is not None else None
        sparse, dense = encoder(points=point_arg, boxes=box_arg, masks=None)
        masks, scores = self.mask_decoder(
            image_embeddings=embedding[None].float().to(self.device),
            image_pe=encoder.pe_layer((h, w)).unsqueeze(0),
            sparse_prompt_embeddings=sparse, dense_prompt_embeddings=dense,
            multimask_output=multimask)
        best = int(scores[0].argmax())
        return Decoded(masks[0, best].cpu(), float(scores[0, best]))
