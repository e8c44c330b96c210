"""The grader's harness: the code that runs a submission, inside the sandbox and in a
student's notebook.  One job per module:

* :mod:`~grader.harness.wire` -- frames, ``torch.save`` payloads, bounds on decoded data;
* :mod:`~grader.harness.submission` -- loading a submission, the import hook, error records;
* :mod:`~grader.harness.oracle` -- functions the grader answers while another is checked;
* :mod:`~grader.harness.standins` -- fixed stand-ins, given classes, spec markers;
* :mod:`~grader.harness.procedures` -- the procedures and :func:`run_procedure`;
* :mod:`~grader.harness.limits` -- rlimits, ``prctl``, privileges, leftover processes;
* :mod:`~grader.harness.scratch` -- the scratch folder's disk use;
* :mod:`~grader.harness.zygote` -- the zygote and its forked children;
* :mod:`~grader.harness.boot` -- the ``python -I -c`` program that starts the zygote.

The package is deliberately self-contained (standard library + torch + torchvision,
never another :mod:`grader` module or :mod:`solutions`): the sandbox cannot import the
grader from disk, so :mod:`~grader.harness.boot` carries these sources on the command
line and loads them under their usual names; :mod:`grader.sanity` imports the package
in-process.  It holds no secret: reading it tells a student nothing about the reference.
``tests/test_grader_harness.py`` keeps it self-contained.
"""
