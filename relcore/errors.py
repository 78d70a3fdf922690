"""User-facing errors.

Every problem a user can cause (bad dataset name, missing file, dangling foreign key,
bad grid value, ...) is raised as :class:`RelcoreError`; the CLIs print its message as
one line and exit non-zero.
"""


class RelcoreError(Exception):
    """A user-facing error: one line naming the problem."""
