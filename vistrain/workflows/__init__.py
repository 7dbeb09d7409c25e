"""One function per user job, shared by the command line and the Python API.

``vistrain/cli/<verb>.py`` parses arguments, calls the job's function and prints its result;
``vistrain.<job>(...)`` (see ``vistrain/__init__.py``) is the same function.  The modules:

* ``train.py``    ``train``: an image folder in, a run directory out
* ``predict.py``  ``load`` and ``predict``: a run (or a pretrained model) applied to images
* ``evaluate.py`` ``evaluate``: a run scored on a labelled folder
* ``cv.py``       ``cv``: k-fold cross-validation
* ``compare.py``  ``compare``: one run per setting
* ``explain.py``  ``explain``: heat-map overlays
* ``check.py``    ``check``: diagnostics before training
* ``lr_find.py``  ``lr_find``: the learning-rate range test

This ``__init__`` deliberately exports nothing: a function here named like one of the modules
above would be replaced by that module as soon as the module is imported.
"""
