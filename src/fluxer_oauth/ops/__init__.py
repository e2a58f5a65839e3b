"""Operations: logging, metrics, cleanup."""
