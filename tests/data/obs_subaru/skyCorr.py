# skyCorr overrides of HSC's obs package, focal-plane settings only (its object-detection
# settings are left out here).
import os.path

config.bgModel1.load(os.path.join(os.path.dirname(__file__), "focalPlaneBackground.py"))
config.bgModel2.xSize = 256 * 0.015
config.bgModel2.ySize = 256 * 0.015
config.bgModel2.pixelSize = 0.015
config.bgModel2.minFrac = 0.5
