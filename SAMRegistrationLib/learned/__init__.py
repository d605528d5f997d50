"""Networks and losses of the learned methods (tensor code; the plug-ins that run them are
modules of :mod:`SAMRegistrationLib.methods`, as encoders' are of ``encoders``)."""
