# Focal-plane model bins of LSSTCam's obs package: 10 x 10 focal-plane units (mm) per bin,
# pixelSize left at its default.
config.xSize = 10.0
config.ySize = 10.0
