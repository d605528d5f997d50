"""SAM-assisted registration (Xu et al., IPMI 2025, seed 000): a network that sees both images
and a foundation model's masks of each, trained with prototype and contour losses. The network
(:mod:`.network`), its losses (:mod:`.losses`), the masks (:mod:`.masks`), the model and its
configuration (:mod:`.model`, :mod:`.config`), the training task (:mod:`.task`) and inference
(:mod:`.inference`); the method plug-in is ``methods/assisted.py``."""
