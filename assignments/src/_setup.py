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


class SetupError(Exception):
    """A problem with the set-up: Jupyter shows just this message, no traceback."""

    def _render_traceback_(self):
        return [f"SetupError: {self}"]


if "google.colab" in sys.modules:
    if USE_DRIVE:
        from google.colab import drive

        drive.mount("/content/drive")
        if not Path(DRIVE_FOLDER).is_dir():
            raise SetupError(f"DRIVE_FOLDER = {DRIVE_FOLDER!r} does not exist on your Google Drive. Upload the whole "
                             "assignment folder to Drive (e.g. into MyDrive/detection-course/), then set DRIVE_FOLDER "
                             "above to where it is and run this cell again.")
        os.chdir(DRIVE_FOLDER)
    if importlib.util.find_spec("data_utils") is None:
        wheels = sorted(Path.cwd().glob("detection_course_student-*.whl"))
        package = str(wheels[-1]) if wheels else COURSE_PACKAGE_URL
        if not package:
            raise SetupError(f"No detection_course_student-*.whl in {Path.cwd()}: upload the whole assignment "
                             "folder you received (the .whl is in it) to DRIVE_FOLDER, or set COURSE_PACKAGE_URL.")
        subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", package], check=True)
        importlib.invalidate_caches()

# The helpers come with the package (data_utils.course_tools); the sanity data stays next to the notebook.
if not Path(f"{ASSIGNMENT}_sanity.pt").is_file():
    raise SetupError(f"{ASSIGNMENT}_sanity.pt is missing from {Path.cwd()}: open the notebook from its assignment "
                     "folder (the folder you received holds it next to the notebook).")
if importlib.util.find_spec("data_utils") is None:
    raise SetupError("The course package is not installed: pip install detection_course_student-*.whl jupyterlab "
                     "(the .whl is in the assignment folder), then restart the kernel.")

import torch  # noqa: E402  (after the checks above: their advice beats an ImportError)

if torch.cuda.is_available():
    print(f"GPU: {torch.cuda.get_device_name(0)}, PyTorch {torch.__version__}")
elif "google.colab" in sys.modules:
    print(f"No GPU: this Colab runtime has only a CPU (PyTorch {torch.__version__}). For the full training, switch to "
          "a GPU (Runtime > Change runtime type > T4 GPU), then run the notebook again from the top.")
else:
    print(f"No GPU: running on the CPU with small settings (PyTorch {torch.__version__}).")
