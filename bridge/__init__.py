"""img2img-bridge: a local image-to-image diffusion server for GIMP and Krita.

This package's ``protocol`` and ``client`` modules are copied into the editors'
plug-in folders, so this file must stay free of heavy imports.
"""

__version__ = "0.1.0"
