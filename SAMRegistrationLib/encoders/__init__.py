"""Feature encoders. Each module registers itself with :mod:`SAMRegistrationLib.registry`."""
