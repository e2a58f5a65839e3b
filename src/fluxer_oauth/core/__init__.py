"""Pure logic with no I/O: usable from every other layer, depending on none."""
