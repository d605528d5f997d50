"""Slicer-side code of the SAMRegistration module.

Everything here except ``dependencies`` and the Qt runner in ``process`` works with Slicer's
Qt-free MRML alone (the ``slicer-core`` PyPI package), so it is tested headless: the scene is
always an argument, and only ``vtkMRML*``/logic classes are imported from ``slicer``.
"""
