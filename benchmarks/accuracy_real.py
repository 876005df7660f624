"""Accuracy of a sky frame on real data: a real infrared array's response under a real crowded field.

The scenario of issue 16, built from data in the registries and fetched into a cache
(``--cache``, default ``~/.cache/skyframes/benchmark-data``; nothing is downloaded by the tests):

- **Response**: the Palomar/WIRC J master flat (2048², a 30 % gradient with quadrant and
  readout-channel steps) from the ``mirar`` 1.2.4 wheel, with WIRC's bad-pixel mask from the same
  wheel. It is the sky frame's truth: every exposure's sky is ``sky level x response``.
- **Objects**: the HST/ACS F606W image of 47 Tuc (NGC 104) in Debian's ``python-drizzle-testdata``
  (``j8bt06nyq_flt.fits``, electrons). Its own sky is removed, the light of its stars is kept
  where a smoothed copy stands above the ACS noise (their footprint: the perfect mask), and nine
  copies, each flipped or turned another way, tile a 3072² canvas. An exposure sees a 2048²
  window of it at its dither offset, so the stars move between exposures and the response does
  not.
- **Exposures**: ``--exposures`` (20) build exposures at sky levels spread over 500-3000 e and
  three science exposures (800, 1600, 2400 e), each ``sky x response + stars`` plus Gaussian noise
  of that variance; the array's bad pixels are flagged BAD and set to 0.

Each option is run through the build chain at the Task level as pipetask configures it
(pipelines/BuildSkyFrame.yaml with the instrument's overrides for a one-detector camera:
cpSkyImage, cpSkyScaleMeasure, cpSkySubtractBackground, cpSkyCombine) and then applied with
SkyCorrectionTask (pipelines/ApplySkyFrame.yaml) to each science exposure. Two maskings of the
build inputs:

- **own masking**: cpSkyImage's MaskObjectsTask, as the pipeline runs it;
- **perfect masks**: the stars' true footprint handed to the same replacement step
  (MaskObjectsTask.removeObjects), so that only the detection differs.

The truth frame is the same chain run on noiseless, star-free copies of the build exposures,
with each bin the plain mean of its pixels (what perfect data would give). Figures:

- *sky-frame RMS error / noise of an equal-weight mean*: the frame's bins against the truth
  frame's, after the best affine match (the normalisation and offset are the scale fit's and
  the background models' business), over the RMS noise an equal-weight mean of the inputs would
  have in those bins (photon noise of the sky alone, all good pixels used, each input divided by
  its sky level).
- *scale error*: the fitted sky-frame scale against the scale the truth frame gets on the same
  science exposure, for this frame's normalisation.
- *large-scale residual / pattern*: the RMS over 32-px (and 8-px) blocks of the corrected image
  minus the stars and the noise that were put in (its truth is zero), over the RMS of the
  exposure's sky pattern ``sky x (response - its mean)`` in the same blocks, averaged over the
  science exposures. BAD pixels are left out. The "truth frame" column is the same for the
  truth frame applied: what the bins and the apply's models alone allow.

Run: ``.venv/bin/python benchmarks/accuracy_real.py`` (about 1 min per option on 2 cores). The
table goes to stdout and ``benchmarks/results/accuracy-real-<time>.json``.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import os
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import load_average, machine_info, pipeline_configs, write_json  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
BUILD = ROOT / "pipelines" / "BuildSkyFrame.yaml"
APPLY = ROOT / "pipelines" / "ApplySkyFrame.yaml"
SEED = 16

MIRAR_WHEEL = "mirar-1.2.4-py3-none-any.whl"
WIRC_DIR = "mirar/pipelines/wirc/wirc_files/files/"
DRIZZLE_DEB = "python-drizzle-testdata_1.13.4-1_all.deb"
ACS_MEMBER = "usr/share/python-drizzle/test_data/j8bt06nyq_flt.fits"

# sha256 of what the cache must hold; a different file is refused rather than measured.
SHA256 = {
    "master_flat_J.fits": "7c3b99f93940a713c22e20960a3175a2d6fd07b0173c697316e54367dd5b90cc",
    "wirc_bad_feb_2018.fits": "a5083b28494683a9d52c0221b388fa8eccaf899661dedecc19d22b79c8739276",
    "j8bt06nyq_flt.fits": "bd78a923a64f02f8f0e3c9f1cfb79182d357dd15a2247c4524874e8fe08bddc6",
}

SIZE = 2048
PIXEL_MM = 0.018
CANVAS = 3072
BLOCKS = (32, 8)
BUILD_SKIES = (500.0, 3000.0)
SCIENCE_SKIES = (800.0, 1600.0, 2400.0)
COVERAGE = 0.14
EDGE_SNR = 0.5

# Each option: the overrides of the build and the apply pipeline ({label: {field: value}}, as
# ``-c label:field=value``) that switch it on. "bgModel1 two detectors" is the generic
# instrument's apply before it gave bgModel1 the build's large-scale bins (one detector).
CROSS_VALIDATED = {"parameters": {"binSizeChoice": "crossValidated"}}
PIXEL_LEVEL = {"cpSkyCombine": {"combineLevel": "pixel"}}
FIXED_DETECTIONS = {"cpSkyCombine": {"combineLevel": "pixel", "sky.maxDetectedFraction": 0.9}}
# solveScales' rejection (3 rounds at skyRej = 3 sigma of the residuals' IQR) switched off: on one
# detector's 16 samples it rejects samples that carry the scale (see benchmarks/README.md).
NO_SCALE_REJECTION = {"skyCorr": {"sky.skyRej": 1e30}}
# cpSkyImage masks cpSkyStackDetect's detections on the stacked build exposures
# (pipelines/BuildSkyFrameStackDetected.yaml; cpSkyStackDetect with its defaults).
STACK_MASKS = {"cpSkyImage": {"doUseStackMask": True}}
OPTIONS = {
    "defaults": {"build": {}, "apply": {}},
    "binSizeChoice=crossValidated": {"build": CROSS_VALIDATED, "apply": {}},
    "combineLevel=pixel": {"build": PIXEL_LEVEL, "apply": {}},
    "combineLevel=pixel, crossValidated": {"build": CROSS_VALIDATED | PIXEL_LEVEL, "apply": {}},
    "pixel, maxDetectedFraction=0.9": {"build": FIXED_DETECTIONS, "apply": {}},
    "pixel, maxDetectedFraction=0.9, crossValidated": {
        "build": CROSS_VALIDATED | FIXED_DETECTIONS,
        "apply": {},
    },
    "pixel, maxDetectedFraction=0.9, crossValidated, no scale rejection": {
        "build": CROSS_VALIDATED | FIXED_DETECTIONS,
        "apply": NO_SCALE_REJECTION,
    },
    "doUseStackMask, pixel, maxDetectedFraction=0.9, crossValidated, no scale rejection": {
        "build": CROSS_VALIDATED | FIXED_DETECTIONS | STACK_MASKS,
        "apply": NO_SCALE_REJECTION,
    },
    "doUseStackMask, pixel, maxDetectedFraction=0.9, crossValidated": {
        "build": CROSS_VALIDATED | FIXED_DETECTIONS | STACK_MASKS,
        "apply": {},
    },
    "bgModel1 two detectors": {
        "build": {},
        "apply": {"skyCorr": {"bgModel1.xSize": 2 * SIZE * PIXEL_MM, "bgModel1.ySize": 2 * SIZE * PIXEL_MM}},
    },
}


# ---------------------------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------------------------


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        for chunk in iter(lambda: stream.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _checked(path: Path) -> Path:
    if _sha256(path) != SHA256[path.name]:
        raise RuntimeError(
            f"{path} is not the file this benchmark was written for (sha256 differs); delete it and "
            "run again to fetch it afresh."
        )
    return path


def fetch(cache: Path) -> dict[str, Path]:
    """Fetch the inputs into ``cache`` (once) and return their paths.

    The mirar wheel comes from PyPI (``pip download``), the drizzle test data from Debian
    (``apt-get download``); only the three files used are kept unpacked.
    """
    cache.mkdir(parents=True, exist_ok=True)
    paths = {name: cache / name for name in SHA256}
    if not (paths["master_flat_J.fits"].exists() and paths["wirc_bad_feb_2018.fits"].exists()):
        wheel = cache / MIRAR_WHEEL
        if not wheel.exists():
            subprocess.run(
                [sys.executable, "-m", "pip", "download", "mirar==1.2.4", "--no-deps", "-d", str(cache)],
                check=True,
            )
        with zipfile.ZipFile(wheel) as archive:
            for name in ("master_flat_J.fits", "wirc_bad_feb_2018.fits"):
                paths[name].write_bytes(archive.read(WIRC_DIR + name))
        wheel.unlink()
    if not paths["j8bt06nyq_flt.fits"].exists():
        with tempfile.TemporaryDirectory(dir=cache) as scratch:
            try:
                subprocess.run(["apt-get", "download", "python-drizzle-testdata"], cwd=scratch, check=True)
                deb = next(Path(scratch).glob("python-drizzle-testdata_*.deb"))
                subprocess.run(["dpkg-deb", "-x", str(deb), scratch], check=True)
            except (OSError, subprocess.CalledProcessError, StopIteration) as error:
                raise RuntimeError(
                    "Could not fetch Debian's python-drizzle-testdata with apt-get and dpkg-deb "
                    f"({error}); on a machine without them, download {DRIZZLE_DEB} by hand and put "
                    f"its {ACS_MEMBER} into {cache}."
                ) from error
            (Path(scratch) / ACS_MEMBER).replace(paths["j8bt06nyq_flt.fits"])
    return {name: _checked(path) for name, path in paths.items()}


@dataclasses.dataclass
class Truth:
    """What the exposures are made of."""

    response: np.ndarray
    """The array's response, mean 1 over good pixels (float64, 2048²)."""
    good: np.ndarray
    """Good pixels of the array."""
    stars: np.ndarray
    """Star light on the 3072² canvas (electrons)."""
    footprint: np.ndarray
    """Where ``stars`` is not zero: the perfect mask."""


def load_truth(paths: dict[str, Path]) -> Truth:
    """Read the response, the bad pixels and the star field."""
    from astropy.io import fits
    from scipy import ndimage

    flat = fits.getdata(paths["master_flat_J.fits"]).astype(np.float64)
    good = (fits.getdata(paths["wirc_bad_feb_2018.fits"]) == 1) & np.isfinite(flat) & (flat > 0)
    response = flat / flat[good].mean()

    with fits.open(paths["j8bt06nyq_flt.fits"]) as hdus:
        acs = hdus["SCI"].data.astype(np.float64)
        dq = hdus["DQ"].data
    # The ACS sky (and the unresolved light of the cluster): a median over 64 px, smoothed.
    sky = ndimage.gaussian_filter(ndimage.median_filter(acs, size=65, mode="reflect"), 16)
    light = acs - sky
    # At HST's depth 47 Tuc has starlight in every pixel. The footprint is the brightest part of a
    # copy smoothed by about the PSF, grown by 1 px, that covers COVERAGE of the pixels; the light
    # outside it is dropped, so that the footprint is a perfect mask. The light is scaled so that
    # the footprint's threshold is EDGE_SNR of the noise of a median exposure: faint wings that one
    # exposure cannot detect, as in a crowded ground-based field.
    smoothed = ndimage.gaussian_filter(light, 1.5)
    usable = dq & 0xFF == 0
    threshold, footprint = _footprint(smoothed, usable)
    scale = EDGE_SNR * np.sqrt(np.median(BUILD_SKIES)) / threshold
    light = np.where(footprint, np.clip(light, 0.0, None) * scale, 0.0)

    stars = np.zeros((CANVAS, CANVAS))
    tile = light.shape[0]
    for index in range(9):
        turned = np.rot90(light, index % 4)
        if index >= 4:
            turned = turned[:, ::-1]
        row, column = divmod(index, 3)
        stars[row * tile : (row + 1) * tile, column * tile : (column + 1) * tile] = turned
    return Truth(response=response, good=good, stars=stars, footprint=stars > 0)


def _footprint(smoothed: np.ndarray, usable: np.ndarray) -> tuple[float, np.ndarray]:
    """The threshold on ``smoothed`` whose footprint, grown by 1 px, covers COVERAGE of the pixels."""
    from scipy import ndimage

    best = None
    for core in np.linspace(0.04, 0.14, 21):
        threshold = float(np.quantile(smoothed[usable], 1.0 - core))
        footprint = ndimage.binary_dilation(smoothed > threshold, iterations=1) & usable
        if best is None or abs(footprint.mean() - COVERAGE) < abs(best[1].mean() - COVERAGE):
            best = (threshold, footprint)
    return best


@dataclasses.dataclass(frozen=True)
class Plan:
    """One exposure: its sky level, dither offset on the star canvas and noise seed."""

    exposure_id: int
    sky: float
    offset: tuple[int, int]
    seed: int


def plans(n_build: int) -> tuple[list[Plan], list[Plan]]:
    """Build and science exposures: sky levels and dither offsets."""
    rng = np.random.default_rng(SEED)
    skies = rng.permutation(np.linspace(*BUILD_SKIES, n_build))
    offsets = rng.integers(0, CANVAS - SIZE, size=(n_build + len(SCIENCE_SKIES), 2))
    build = [Plan(i, float(s), tuple(map(int, offsets[i])), 1000 + i) for i, s in enumerate(skies)]
    science = [
        Plan(100 + i, s, tuple(map(int, offsets[n_build + i])), 2000 + i) for i, s in enumerate(SCIENCE_SKIES)
    ]
    return build, science


@dataclasses.dataclass
class Exposure:
    image: object
    """The `lsst.images.MaskedImage`."""
    stars: np.ndarray
    footprint: np.ndarray
    noise: np.ndarray


def make_exposure(truth: Truth, plan: Plan, *, noiseless: bool = False) -> Exposure:
    """``sky x response + stars`` plus noise, bad pixels flagged BAD and set to 0.

    ``noiseless``: ``sky x response`` alone (no stars, no noise), for the truth frame.
    """
    from lsst.images import Box, Image, Mask, MaskedImage

    from lsst.skyframes.mask_planes import default_mask_schema

    y, x = plan.offset
    stars = truth.stars[y : y + SIZE, x : x + SIZE]
    footprint = truth.footprint[y : y + SIZE, x : x + SIZE]
    if noiseless:
        stars, footprint = np.zeros_like(stars), np.zeros_like(footprint)
    expected = plan.sky * truth.response + stars
    rng = np.random.default_rng(plan.seed)
    noise = rng.standard_normal(expected.shape) * np.sqrt(np.clip(expected, 0.0, None))
    if noiseless:
        noise[...] = 0.0
    pixels = (expected + noise).astype(np.float32)
    bad = ~truth.good
    pixels[bad] = 0.0
    bbox = Box.from_shape((SIZE, SIZE))
    mask = Mask(0, schema=default_mask_schema(), bbox=bbox)
    mask.set("BAD", bad)
    image = MaskedImage(
        Image(pixels, bbox=bbox), mask=mask, variance=Image(expected.astype(np.float32), bbox=bbox)
    )
    # What the image holds beyond sky x response, as stored (float32 rounding included).
    return Exposure(
        image=image, stars=stars, footprint=footprint, noise=pixels - plan.sky * truth.response - stars
    )


# ---------------------------------------------------------------------------------------------
# The build and the apply, at the Task level
# ---------------------------------------------------------------------------------------------


def camera():
    from lsst.skyframes.camera import make_synthetic_camera

    return make_synthetic_camera(1, 1, SIZE, name="WIRC", pixel_size_mm=PIXEL_MM, filters=(("WIRC-J", "J"),))


def _footprint_mask_task():
    """MaskObjectsTask that takes the true footprint as its detection (perfect masks)."""
    from lsst.skyframes.masking import MaskObjectsTask

    class FootprintMaskTask(MaskObjectsTask):
        """Set DETECTED to ``footprint`` (given before each run), then replace it as a detection."""

        footprint: np.ndarray | None = None

        def run(self, exposure, maskPlanes=None):
            exposure.mask.set("DETECTED", self.footprint)
            return self.removeObjects(exposure, maskPlanes)

    return FootprintMaskTask


def stack_masks(truth: Truth, build_plans: list[Plan]) -> dict[int, np.ndarray]:
    """cpSkyStackDetect's masks of the build exposures (its defaults; offsets measured, not given)."""
    from lsst.skyframes.stack_detection import STACK_MASK_PLANE, CpSkyStackDetectTask

    result = CpSkyStackDetectTask().run(
        [make_exposure(truth, plan).image for plan in build_plans],
        exposureIds=[plan.exposure_id for plan in build_plans],
    )
    true = np.array([plan.offset for plan in build_plans])
    if [tuple(o) for o in true - true.min(axis=0)] != result.offsets:
        print(f"  cpSkyStackDetect offsets {result.offsets} differ from the dithers {true.tolist()}")
    return {
        plan.exposure_id: mask.get(STACK_MASK_PLANE)
        for plan, mask in zip(build_plans, result.outputMasks, strict=True)
    }


def build(truth: Truth, build_plans: list[Plan], configs: dict, masking: str) -> tuple[object, list[float]]:
    """Run the build chain on the exposures; return the sky frame and each input's sky level.

    ``masking``: "own" (cpSkyImage's MaskObjectsTask, or with ``doUseStackMask`` cpSkyStackDetect's
    masks, `stack_masks`), "perfect" (the true footprints, replaced as MaskObjectsTask replaces a
    detection) or "truth" (noiseless exposures without stars, nothing detected: only the BAD
    pixels are replaced).
    """
    use_stack = configs["cpSkyImage"].doUseStackMask and masking == "own"
    stacked = stack_masks(truth, build_plans) if use_stack else None
    from lsst.skyframes.build import (
        CpSkyCombineTask,
        CpSkyImageTask,
        CpSkyScaleMeasureTask,
        CpSkySubtractBackgroundTask,
        normalise_residual,
    )
    from lsst.skyframes.mask_planes import DETECTION_PLANES

    cam = camera()
    detector = cam[0]
    image_task = CpSkyImageTask(config=configs["cpSkyImage"])
    # With doUseStackMask the given masks go in as cpSkyStackMask would (perfect masks too).
    given_masks = configs["cpSkyImage"].doUseStackMask
    if masking != "own" and not given_masks:
        # The pipeline's configs are frozen: swap in the footprint masker with the same config.
        image_task.maskTask = _footprint_mask_task()(config=image_task.maskTask.config)
    scale_task = CpSkyScaleMeasureTask(config=configs["cpSkyScaleMeasure"])
    subtract_task = CpSkySubtractBackgroundTask(config=configs["cpSkySubtractBackground"])
    combine_task = CpSkyCombineTask(config=configs["cpSkyCombine"])
    # combineLevel='pixel' combines the normalised images themselves (held here, as loaders).
    keep_images = configs["cpSkyCombine"].combineLevel == "pixel"
    # As cpSkyCombine's loaders do: the original image with the object mask applied (detected
    # pixels keeping their values with sky.maxDetectedFraction), then normalised.
    keep = DETECTION_PLANES if configs["cpSkyCombine"].sky.maxDetectedFraction is not None else ()
    residuals, levels, images = [], [], []
    for plan in build_plans:
        exposure = make_exposure(truth, plan, noiseless=masking == "truth")
        stack_mask = None
        if given_masks:
            stack_mask = stacked[plan.exposure_id] if stacked is not None else exposure.footprint
        elif masking != "own":
            image_task.maskTask.footprint = exposure.footprint
        original = exposure.image.image.copy() if keep_images else None
        masked = image_task.run(exposure.image, cam, detector, stackMask=stack_mask)
        merged = scale_task.run([masked.maskedBkg])
        levels.append(float(merged.outputScale["scale"]))
        result = subtract_task.run(masked.maskedExp, merged.outputBkg, merged.outputScale, detector)
        residuals.append(result.outputBkg)
        if keep_images:
            image = masked.objectMask.applyTo(original, keep)
            normalise_residual(image, merged.outputBkg, float(merged.outputScale["scale"]), detector)
            images.append(image)
    loaders = [lambda image=image: image for image in images] if keep_images else None
    sky = combine_task.run(
        residuals, exposureIds=[p.exposure_id for p in build_plans], residualImages=loaders
    ).outputCalib
    return sky, levels


def apply(truth: Truth, sky, science_plans: list[Plan], configs: dict) -> list[dict[str, float]]:
    """Correct each science exposure with the sky frame; the fitted scale and the residual's blocks."""
    from lsst.skyframes.correction import SkyCorrectionTask

    cam = camera()
    task = SkyCorrectionTask(config=configs["skyCorr"])
    results = []
    for plan in science_plans:
        exposure = make_exposure(truth, plan)
        out = task.run([exposure.image], None, [sky], cam, [0])
        # The corrected image minus what was put in beyond the sky: its truth is zero.
        residual = exposure.image.image.array.astype(np.float64) - exposure.stars - exposure.noise
        pattern = plan.sky * (truth.response - truth.response[truth.good].mean())
        results.append(
            {
                "exposure": plan.exposure_id,
                "sky": plan.sky,
                "scale": float(out.skyFrameScale),
                **{f"residual_{b}": block_rms(residual, truth.good, b) for b in BLOCKS},
                **{f"pattern_{b}": block_rms(pattern, truth.good, b) for b in BLOCKS},
            }
        )
    return results


# ---------------------------------------------------------------------------------------------
# Figures against the truth
# ---------------------------------------------------------------------------------------------


def block_means(values: np.ndarray, good: np.ndarray, size: int) -> np.ndarray:
    """Mean of ``values`` over the good pixels of each ``size`` x ``size`` block."""
    from lsst.skyframes.statistics import binned_statistics

    edges = np.arange(0, SIZE + 1, size)
    return binned_statistics(values, ~good, edges, edges, "MEAN").value


def block_rms(values: np.ndarray, good: np.ndarray, size: int) -> float:
    """RMS about their mean of the block means: the structure at scales of ``size`` and more."""
    means = block_means(values, good, size)
    means = means[np.isfinite(means)]
    return float(np.sqrt(np.mean((means - means.mean()) ** 2)))


def frame_bins(sky) -> tuple[np.ndarray, int]:
    """The sky frame's bin values and its bin size."""
    values = sky.image.array.astype(np.float64)
    return values, SIZE // values.shape[1]


def affine_match(frame: np.ndarray, truth: np.ndarray) -> tuple[float, np.ndarray]:
    """``frame ≈ a x truth + c`` by least squares over the finite bins: a and the residual."""
    finite = np.isfinite(frame) & np.isfinite(truth)
    design = np.column_stack([truth[finite], np.ones(finite.sum())])
    (a, c), *_ = np.linalg.lstsq(design, frame[finite], rcond=None)
    residual = np.full(frame.shape, np.nan)
    residual[finite] = frame[finite] - (a * truth[finite] + c)
    return float(a), residual


def truth_overrides(bin_size: int) -> dict[str, dict[str, object]]:
    """Build overrides of the truth frame: fixed ``bin_size`` bins, each the plain mean of its pixels."""
    sky = {
        "sky.background.binSizeChoice": "fixed",
        "sky.background.xBinSize": bin_size,
        "sky.background.yBinSize": bin_size,
        "sky.background.statistic": "MEAN",
    }
    return {"cpSkySubtractBackground": sky, "cpSkyCombine": sky}


def frame_error(
    truth: Truth, sky, true_sky, levels: list[float], build_plans: list[Plan]
) -> dict[str, float]:
    """The frame's RMS error against the truth frame, over the noise of an equal-weight mean."""
    values, bin_size = frame_bins(sky)
    true_values, _ = frame_bins(true_sky)
    a, residual = affine_match(values, true_values)
    true_bins = block_means(truth.response, truth.good, bin_size)
    good_count = block_means(truth.good.astype(np.float64), np.ones_like(truth.good), bin_size) * bin_size**2
    # Each input divided by its sky level: variance per pixel sky x response / level².
    variance = sum(plan.sky * true_bins / level**2 for plan, level in zip(build_plans, levels, strict=True))
    noise = np.sqrt(variance / good_count) / len(levels)
    finite = np.isfinite(residual)
    error = float(np.sqrt(np.mean(residual[finite] ** 2)))
    floor = float(np.sqrt(np.mean(noise[finite] ** 2)))
    return {
        "bin_size": bin_size,
        "normalisation": a,
        "rms_error": error,
        "noise": floor,
        "ratio": error / floor,
    }


def run_option(truth: Truth, name: str, overrides: dict, n_build: int) -> dict[str, object]:
    """Build with both maskings and apply; the figures of one option against the truth frame."""
    cam = camera()
    # The mosaic plots are not looked at here. bgModel2 is made half a detector: the instrument's
    # overrides make it one detector, and on a one-detector camera each such bin holds a quarter
    # of the detector (the grid's bins are centred on the detector's corners, as afw's are),
    # below bgModel2's minFrac of 0.3 however few pixels are masked.
    half_detector = SIZE * PIXEL_MM / 2
    apply_overrides = {
        "skyCorr": {
            "doPlotMosaics": False,
            "bgModel2.xSize": half_detector,
            "bgModel2.ySize": half_detector,
            **overrides["apply"].get("skyCorr", {}),
        }
    }
    apply_configs = pipeline_configs(APPLY, cam, apply_overrides)
    build_plans, science_plans = plans(n_build)
    row: dict[str, object] = {"option": name, "overrides": overrides}
    truths: dict[int, dict[str, object]] = {}
    stacked = overrides["build"].get("cpSkyImage", {}).get("doUseStackMask", False)
    row["masking"] = "own masking, stack-detected" if stacked else "own masking"
    for masking in ("own", "perfect"):
        start = time.perf_counter()
        configs = pipeline_configs(BUILD, cam, overrides["build"]) | apply_configs
        sky, levels = build(truth, build_plans, configs, masking)
        bin_size = frame_bins(sky)[1]
        if bin_size not in truths:
            true_configs = pipeline_configs(BUILD, cam, truth_overrides(bin_size)) | apply_configs
            true_sky, _ = build(truth, build_plans, true_configs, "truth")
            truths[bin_size] = {
                "sky": true_sky,
                "science": apply(truth, true_sky, science_plans, apply_configs),
            }
        true_sky, true_science = truths[bin_size]["sky"], truths[bin_size]["science"]
        error = frame_error(truth, sky, true_sky, levels, build_plans)
        applied = apply(truth, sky, science_plans, apply_configs)
        for entry, ideal in zip(applied, true_science, strict=True):
            # The scale that the truth frame gets on the same exposure, for this frame's normalisation.
            entry["scale_truth"] = ideal["scale"]
            entry["scale_error"] = entry["scale"] * error["normalisation"] / ideal["scale"] - 1.0
        row[masking] = {
            "frame": error,
            "science": applied,
            "seconds": time.perf_counter() - start,
            **{f"residual_{b}": _mean_ratio(applied, b) for b in BLOCKS},
        }
        print(f"  {name}, {masking} masking: {time.perf_counter() - start:.0f} s", flush=True)
    bin_size = row["own"]["frame"]["bin_size"]
    row["limit"] = {
        "bin_size": bin_size,
        **{f"residual_{b}": _mean_ratio(truths[bin_size]["science"], b) for b in BLOCKS},
    }
    return row


def _mean_ratio(applied: list[dict[str, float]], block: int) -> float:
    """Residual / pattern at ``block``-px blocks, averaged over the science exposures."""
    return float(np.mean([e[f"residual_{block}"] / e[f"pattern_{block}"] for e in applied]))


def table(rows: list[dict[str, object]]) -> str:
    """The issue's table, one per option."""
    lines = []
    for row in rows:
        own, perfect, limit = row["own"], row["perfect"], row["limit"]
        label = row.get("masking", "own masking")

        def scale_range(figures):
            errors = [abs(e["scale_error"]) * 100 for e in figures["science"]]
            return f"{min(errors):.3f}-{max(errors):.3f} %"

        lines += [
            f"### {row['option']} ({label}: {own['frame']['bin_size']}-px bins; "
            f"perfect masks: {perfect['frame']['bin_size']}-px bins)",
            "",
            f"| | {label} | perfect masks | truth frame, {limit['bin_size']}-px bins |",
            "|---|---:|---:|---:|",
            f"| sky-frame RMS error / noise of an equal-weight mean | {own['frame']['ratio']:.1f} | "
            f"{perfect['frame']['ratio']:.1f} | - |",
            f"| scale error of a science exposure (abs, 3 exposures) | {scale_range(own)} | "
            f"{scale_range(perfect)} | - |",
        ]
        for b in BLOCKS:
            lines.append(
                f"| large-scale residual / pattern, {b}-px blocks | {own[f'residual_{b}']:.3f} | "
                f"{perfect[f'residual_{b}']:.3f} | {limit[f'residual_{b}']:.3f} |"
            )
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cache", type=Path, default=Path.home() / ".cache" / "skyframes" / "benchmark-data")
    parser.add_argument("--exposures", type=int, default=20, help="build exposures (default 20)")
    parser.add_argument(
        "--option", action="append", choices=list(OPTIONS), help="options to run (default all)"
    )
    args = parser.parse_args()
    os.environ.setdefault("MPLBACKEND", "Agg")
    truth = load_truth(fetch(args.cache))
    covered = truth.footprint[:SIZE, :SIZE].mean()
    print(
        f"stars touch {covered:.1%} of the pixels; {(~truth.good).mean():.2%} of the array is bad", flush=True
    )
    rows = [run_option(truth, name, OPTIONS[name], args.exposures) for name in args.option or OPTIONS]
    text = table(rows)
    print(f"\nload average {load_average()}\n")
    print(text)
    path = write_json(
        {
            "machine": machine_info(),
            "star_coverage": float(covered),
            "exposures": args.exposures,
            "rows": rows,
        },
        "accuracy-real",
    )
    print(f"results: {path}")


if __name__ == "__main__":
    main()
