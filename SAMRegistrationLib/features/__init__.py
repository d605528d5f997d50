"""The tensor code behind the encoder plug-ins (:mod:`SAMRegistrationLib.encoders`): MIND-SSC,
slice-wise foundation-model features with their on-disk cache, the LiteMedSAM and SAM ViT
image encoders, fusion and the automatic choice. Imported only when an encoder is built."""
