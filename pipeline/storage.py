"""Storage adapters: where the objects of `pipeline.outputs` are written.

`LocalDirectory` serves `python -m pipeline process`: each object becomes a file at its key.
"""

from __future__ import annotations

from pathlib import Path

from pipeline.outputs import OutputObject


class LocalDirectory:
    def __init__(self, root: str | Path):
        self.root = Path(root)

    def put(self, obj: OutputObject) -> Path:
        target = self.root / obj.key
        target.parent.mkdir(parents=True, exist_ok=True)
        temporary = target.with_name(target.name + ".partial")
        temporary.write_bytes(obj.body)
        temporary.replace(target)  # a reader never sees half a file
        return target
