"""The course's assignments: text sources, the notebook build, the nbgrader course.

``python -m assignments --help`` lists the commands; ``assignments/INSTRUCTORS.md``
explains the term's workflow.
"""
