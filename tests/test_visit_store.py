"""SkyCorrectionTask with images given as handles: kept in scratch files between passes.

The images then wait on disk and are mapped back one detector at a time. These tests check that
this changes nothing (skyCorr, the corrected images, the scale and the mosaics equal bit for bit
those of the same visit given in memory), that the corrected images keep what was read beside
the pixels, and that the scratch files go. Memory itself is measured by
benchmarks/quantum_memory.py, not asserted here.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from lsst.pipe.base import InMemoryDatasetHandle

import test_correction
import test_visit_images
from lsst.skyframes.correction import SkyCorrectionTask
from lsst.skyframes.errors import FocalPlaneCoverageError

frames = test_correction.frames
visit = test_correction.visit
make_config = test_correction.make_config


def _run(frames, images, calBkgs, camera, handles: bool, **fields):
    ids = sorted(images)
    task = SkyCorrectionTask(config=make_config(frames, **fields))
    calExps = [InMemoryDatasetHandle(images[d], copy=True) if handles else images[d].copy() for d in ids]
    return task.run(calExps, calBkgs, [frames.skies[d] for d in ids], camera, ids)


def _same(held, scratch, corrected_too: bool) -> None:
    assert scratch.skyFrameScale == held.skyFrameScale
    for a, b in zip(held.skyCorr, scratch.skyCorr, strict=True):
        assert len(a) == len(b)
        np.testing.assert_array_equal(a.getImage().array, b.getImage().array)
    np.testing.assert_array_equal(held.calExpMosaic.array, scratch.calExpMosaic.array)
    np.testing.assert_array_equal(held.calBkgMosaic.array, scratch.calBkgMosaic.array)
    if corrected_too:
        assert len(scratch.correctedExp) == len(held.correctedExp)
        for a, b in zip(held.correctedExp, scratch.correctedExp, strict=True):
            np.testing.assert_array_equal(a.image.array, b.image.array)
            np.testing.assert_array_equal(a.mask.array, b.mask.array)
            np.testing.assert_array_equal(a.variance.array, b.variance.array)


@pytest.mark.parametrize("fields", [{}, {"undoBgModel1": True}, {"doWriteCorrected": True}])
def test_masked_images_from_handles_give_the_same_results(frames, visit, fields):
    images = {d: visit[d].image for d in visit}
    calBkgs = [visit[d].background for d in sorted(visit)]
    held = _run(frames, images, calBkgs, frames.camera, False, **fields)
    scratch = _run(frames, images, calBkgs, frames.camera, True, **fields)
    _same(held, scratch, corrected_too=fields.get("doWriteCorrected", False))
    directory = Path(scratch.store._directory.name)
    assert sorted(p.name for p in directory.iterdir())[:2] == ["0-image.npy", "0-mask.npy"]
    # The variance is kept only when whole corrected images are wanted.
    assert (directory / "0-variance.npy").exists() == bool(fields.get("doWriteCorrected"))
    scratch.store.close()
    assert not directory.exists()


def test_visit_images_from_handles_keep_what_was_read(frames, visit):
    images = test_visit_images.visit_images(frames, visit)
    held = _run(frames, images, None, None, False, doWriteCorrectedVisitImage=True)
    scratch = _run(frames, images, None, None, True, doWriteCorrectedVisitImage=True)
    _same(held, scratch, corrected_too=True)
    for d, a, b in zip(sorted(images), held.correctedVisitImage, scratch.correctedVisitImage, strict=True):
        assert b.detector.id == d and b.psf.sigma == images[d].psf.sigma and b.band == images[d].band
        assert set(b.backgrounds) == set(a.backgrounds) == {"subtracted", "skyCorr"}
        np.testing.assert_array_equal(a.image.array, b.image.array)
        field = b.backgrounds["skyCorr"].field.render(b.bbox).array
        np.testing.assert_array_equal(a.backgrounds["skyCorr"].field.render(a.bbox).array, field)
    # The inputs behind the handles are untouched (each read is a copy).
    assert not np.array_equal(images[0].image.array, scratch.correctedExp[0].image.array)
    scratch.store.close()


def test_scratch_files_go_when_a_pass_fails(frames, visit, tmp_path, monkeypatch):
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", None)  # re-read TMPDIR
    images = {d: visit[d].image for d in visit}
    with pytest.raises(FocalPlaneCoverageError):
        # No bin of bgModel1 can have this many good pixels.
        config = make_config(frames)
        config.bgModel1.minFrac = 1.5
        task = SkyCorrectionTask(config=config)
        ids = sorted(images)
        task.run(
            [InMemoryDatasetHandle(images[d], copy=True) for d in ids],
            [visit[d].background for d in ids],
            [frames.skies[d] for d in ids],
            frames.camera,
            ids,
        )
    assert list(tmp_path.iterdir()) == []
    # ...where they were written: a run that succeeds keeps them there until closed.
    result = _run(frames, images, [visit[d].background for d in sorted(images)], frames.camera, True)
    assert Path(result.store._directory.name).parent == tmp_path
    result.store.close()
    assert list(tmp_path.iterdir()) == []
