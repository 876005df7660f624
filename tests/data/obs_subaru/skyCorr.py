# skyCorr overrides of HSC's obs package: its focal-plane models and its object detection.
import os.path

config.bgModel1.load(os.path.join(os.path.dirname(__file__), "focalPlaneBackground.py"))
config.bgModel2.xSize = 256 * 0.015
config.bgModel2.ySize = 256 * 0.015
config.bgModel2.pixelSize = 0.015
config.bgModel2.minFrac = 0.5
# Object detection for sky correction: threshold on the clipped noise of the smoothed image,
# Manhattan growth, no temporary local background.
config.maskObjects.detection.thresholdType = "stdev"
config.maskObjects.detection.isotropicGrow = False
config.maskObjects.detection.doTempLocalBackground = False
