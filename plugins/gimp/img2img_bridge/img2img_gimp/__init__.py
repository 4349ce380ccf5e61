"""The GIMP plug-in's logic, importable without GIMP.

Only ``gimp_canvas``, ``glib_loop`` and ``dialog`` import ``gi``; everything
else runs (and is unit-tested) on plain Python 3.10+ against ``bridge.editor.client``.
"""
