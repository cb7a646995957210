"""The HTTP edge: our own HTTP/1.1 server protocol on httptools, run by uvicorn's ``Server``
(``http="tokenrelay.edge.protocol:EdgeProtocol"``), bounded in everything a client controls
before the app sees its request (``protocol``), lean per open stream (``cycle``).

Nothing is imported here, so ``tokenrelay.edge.signal`` is importable without httptools.
"""
