"""The editor side of the bridge: what runs inside GIMP and Krita.

Copied whole into each plug-in and imported there under the plug-in's own name
(``img2img_bridge._bridge``), so its modules import one another relatively and
reach websockets and msgpack only through ``dependencies``. Standard library
only otherwise: the editors' embedded Pythons (3.10 and up) have no pip.
The server imports its message definitions from here too.
"""
