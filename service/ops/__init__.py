"""Operating the service: the ``qat admin``/``qat db``/``qat serve`` commands and retention."""
