"""One module per detector; each registers itself with ``@register_detector``."""
