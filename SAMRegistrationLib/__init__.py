"""SAMRegistration engine: foundation-feature registration of medical volumes in physical space.

Pure Python (torch, SimpleITK, numpy); never imports Slicer or Qt. Importing the package is
cheap: heavy modules (torch, encoders) load when first used.
"""
__version__ = "0.1.0"
