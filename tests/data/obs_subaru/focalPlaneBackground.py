# Focal-plane model bins of HSC's obs package: 8192 pixels of 0.015 mm.
config.xSize = 8192 * 0.015
config.ySize = 8192 * 0.015
config.pixelSize = 0.015
