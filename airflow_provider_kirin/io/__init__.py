"""The code that does I/O besides the hooks' own requests: total deadlines for ``requests``
(``deadline.py``) and keeping videos in storage (``storage.py``). What to do is decided in
``core/``; this package only carries it out.
"""
