"""Registration methods. Each module registers itself with :mod:`SAMRegistrationLib.registry`."""
