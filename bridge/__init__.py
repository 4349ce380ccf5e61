"""img2img-bridge: a local image-to-image diffusion server for GIMP and Krita.

The editor side (what the plug-ins carry) is the ``editor`` sub-package; this
file stays free of heavy imports so that the command line starts quickly.
"""

__version__ = "0.1.0"
