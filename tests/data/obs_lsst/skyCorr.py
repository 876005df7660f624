# skyCorr overrides of LSSTCam's obs package, focal-plane settings only: its large-scale model
# takes the bins of focalPlaneBackground.py (the obs package names that model bgModel1 since
# pipe_tasks renamed bgModel).
import os.path

config.bgModel1.load(os.path.join(os.path.dirname(__file__), "focalPlaneBackground.py"))
