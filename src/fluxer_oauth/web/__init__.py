"""The HTTP edge: routes that parse requests, call ``oauth``/``platform``, and render."""
