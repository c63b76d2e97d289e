"""Exceptions raised by meteorpi_model.

    MeteorpiError               root of every meteorpi exception (all three packages)
    └── ValidationError         (also a ValueError) bad input: names the field path and the problem

The root lives here because meteorpi_model is the package every other one imports.
"""


class MeteorpiError(Exception):
    """Root of every exception meteorpi raises on purpose."""


class ValidationError(MeteorpiError, ValueError):
    """Input that does not satisfy the wire form.

    ``path`` is the dotted field path (``event.files[1].md5``) and ``problem`` says what is
    wrong, so a camera operator can find the offending value without reading our code.
    """

    def __init__(self, path: str, problem: str):
        self.path = path
        self.problem = problem
        super().__init__(f"{path}: {problem}" if path else problem)
