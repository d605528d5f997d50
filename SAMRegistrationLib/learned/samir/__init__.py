"""SAMIR (He, Liu et al., seed 001): a network on frozen foundation features. The network
(:mod:`.network`), its losses (:mod:`.losses`), the frozen features (:mod:`.frozen`), the model
and its configuration (:mod:`.model`, :mod:`.config`), the training task (:mod:`.task`) and
inference (:mod:`.inference`); the method plug-in is ``methods/samir.py``."""
