"""Training machinery for learned registration methods (``samreg train``).

* :mod:`.config` -- :class:`TrainConfig` (optimisation, training grid, synthesis), torch-free;
* :mod:`.dataset` -- the dataset JSON (volumes, label maps, pairs, validation) and its hash;
* :mod:`.synthesis` -- random diffeomorphisms, intensity changes, SynthMorph-style images;
* :mod:`.feature_cache` -- features of each training volume computed once (disk + memory);
* :mod:`.pairs` -- :class:`PairSampler`: deterministic training pairs drawn on the fly;
* :mod:`.task` -- the protocol between the trainer and a learned method;
* :mod:`.trainer` -- the training loop: checkpoints, resume, validation, DDP;
* :mod:`.run_files` -- what a run folder holds besides checkpoints (log, metrics, curves).

Nothing here is imported by ``samreg --help``; :mod:`.config` and :mod:`.dataset` need no torch.
See docs/training.md.
"""
