# Run this cell first. On Google Colab it installs the course package (data
# loading, training loop, evaluation and plots; not the answers), optionally mounts
# Google Drive and moves into your copy of the assignment folder. On your own
# machine (or when a grader runs the notebook) it installs nothing: it checks
# that the package is importable and reports the hardware.
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

ASSIGNMENT = "{{ASSIGNMENT}}"
USE_DRIVE = True  # Colab only: keep the notebook (and your work) on Google Drive
DRIVE_FOLDER = "/content/drive/MyDrive/detection-course/{{ASSIGNMENT}}"  # where you uploaded the folder
# Optional: where your instructor published the student package (a .whl URL).
COURSE_PACKAGE_URL = os.environ.get("COURSE_PACKAGE_URL", "")

if "google.colab" in sys.modules:
    if USE_DRIVE:
        from google.colab import drive

        drive.mount("/content/drive")
        os.chdir(DRIVE_FOLDER)
    if importlib.util.find_spec("data_utils") is None:
        wheels = sorted(Path.cwd().glob("detection_course_student-*.whl"))
        package = str(wheels[-1]) if wheels else COURSE_PACKAGE_URL
        if not package:
            raise RuntimeError("Upload the whole assignment folder (it holds detection_course_student-*.whl) "
                               "or set COURSE_PACKAGE_URL.")
        subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", package], check=True)
        importlib.invalidate_caches()

for needed in ("course_tools.py", f"{ASSIGNMENT}_sanity.pt"):
    if not Path(needed).is_file():
        raise RuntimeError(f"{needed} is missing from {Path.cwd()}: run the notebook from its assignment folder.")
if importlib.util.find_spec("data_utils") is None:
    raise RuntimeError("The course package is not installed: pip install detection_course_student-*.whl "
                       "(it is in the assignment folder).")

import torch

if torch.cuda.is_available():
    print(f"GPU: {torch.cuda.get_device_name(0)}, PyTorch {torch.__version__}")
else:
    print(f"No GPU: running on the CPU with small settings (PyTorch {torch.__version__}).")
