"""The HTTP door: ``streamscore serve``, the processor's scoring behind FastAPI on uvicorn.

One implementation, two doors: the Open Inference Protocol v2 (``oip``) and a JSON door
for sensor events both end in the processor's ``ScoringPipeline`` (``service``), with its
models and hot swap (``models``), its audit records and its outputs (``publish``).
Concurrent requests are coalesced by ``batcher``; ``app``, ``auth`` and ``ops_routes``
are the routes, ``keys`` the hashed API keys, ``wiring`` builds it all from the
settings, ``server`` runs it, and ``bench`` is ``streamscore bench-http``.
"""
