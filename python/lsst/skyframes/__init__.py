"""skyframes: build, persist and apply sky frames for the Rubin pipelines."""

from .background import (
    ApproximateControl,
    BackgroundControl,
    BackgroundList,
    BackgroundMI,
    makeBackground,
)
from .errors import *  # noqa: F403
from .interpolate import (
    Interpolate,
    UndersampleStyle,
    stringToInterpStyle,
    stringToUndersampleStyle,
)
from .sky_measurement import BackgroundConfig, SkyMeasurementConfig, SkyMeasurementTask, SkyStatsConfig
from .statistics import Property, StatisticsControl, stringToStatisticsProperty
from .version import __version__

__all__ = [
    "ApproximateControl",
    "BackgroundConfig",
    "BackgroundControl",
    "BackgroundList",
    "BackgroundMI",
    "Interpolate",
    "Property",
    "SkyMeasurementConfig",
    "SkyMeasurementTask",
    "SkyStatsConfig",
    "StatisticsControl",
    "UndersampleStyle",
    "__version__",
    "makeBackground",
    "stringToInterpStyle",
    "stringToStatisticsProperty",
    "stringToUndersampleStyle",
]
