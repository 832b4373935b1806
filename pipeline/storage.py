"""Storage adapters: where the objects of `pipeline.outputs` are written.

`LocalDirectory` serves `python -m pipeline process`: each object becomes a file at its key.
"""

from __future__ import annotations

import os

from pipeline.outputs import OutputObject


class LocalDirectory:
    def __init__(self, root: str | os.PathLike):
        self.root = os.fspath(root)

    def put(self, obj: OutputObject) -> str:
        target = os.path.join(self.root, *obj.key.split("/"))
        os.makedirs(os.path.dirname(target), exist_ok=True)
        temporary = target + ".partial"
        with open(temporary, "wb") as file:
            file.write(obj.body)
        os.replace(temporary, target)  # a reader never sees half a file
        return target
