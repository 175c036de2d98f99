from collections.abc import Sequence

def window_stopped(window: Sequence[tuple[object, ...]], max_diameter: float, /) -> bool | None:
    """Whether the window's stop rectangle fits ``max_diameter``; None where only GEOS can tell."""
