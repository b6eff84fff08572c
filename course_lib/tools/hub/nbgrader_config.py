# nbgrader's settings for everyone on the hub's machine. `make hub-course` copies this file to
# COURSE_HUB_HOME/venv/etc/jupyter/, where nbgrader (and its JupyterLab extension) looks for it, so the leader's and
# every learner's nbgrader meet in one exchange folder (README, "Exercises through nbgrader").
from pathlib import Path

c = get_config()  # noqa: F821 (traitlets defines it)
HUB_HOME = Path(__file__).resolve().parents[3]  # COURSE_HUB_HOME/venv/etc/jupyter/nbgrader_config.py

c.CourseDirectory.course_id = "course"
# Made by make hub-course, mode 1777: everyone may add to it, nobody may remove another's files; nbgrader makes
# the course's inbound folder write-only for learners, so no learner can list or read another's submission.
c.Exchange.root = str(HUB_HOME / "exchange")
c.Exchange.assignment_dir = str(Path.home() / "course")  # fetched into ~/course/NN_slug/, beside chapters-read-only
# Seconds a cell may take when the leader autogrades (under COURSE_PROFILE=ci a whole chapter takes under a minute).
# Keep it short: nbclient sometimes notices a cell's reply only when this timeout expires, after a cell that shows a
# widget (jupyter/nbclient#312, open), so each such stall costs up to this long.
c.Execute.timeout = 60
