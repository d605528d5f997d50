"""Registration methods: one plug-in module each (see :mod:`SAMRegistrationLib.plugins`).

Modules here import torch only inside their functions, so that listing methods stays light."""
