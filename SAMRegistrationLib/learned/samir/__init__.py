"""SAMIR (He, Liu et al., seed 001; issue 17, in progress): a network on frozen foundation
features. The network (:mod:`.network`), its losses (:mod:`.losses`) and the frozen features
(:mod:`.frozen`); the method plug-in (``methods/samir.py``) is declared once a trained model
ships with the package, so that no listed method needs weights it cannot find."""
