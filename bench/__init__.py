"""Benchmarks: the raw diffusers call, the bridge's engine in-process, and the full round trip (see docs/benchmarks.md).

The modules the client worker imports (``client_worker``, ``client_ops``,
``client_patches``, ``timing``) need only the standard library and
the client library, so that they also run beside the pure-Python copies of
websockets and msgpack that the editors' plug-ins carry.
"""
