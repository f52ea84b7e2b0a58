"""Remove initializers that no node reads (tf2onnx leaves a few constant-folding leftovers; ONNX Runtime warns about
each at every load). The computation is unchanged.

Run: .venv-scripts/bin/python prune_unused_initializers.py FILE.onnx...  (rewrites each file in place)
"""
import sys

import onnx

for path in sys.argv[1:]:
    m = onnx.load(path)
    used = {i for n in m.graph.node for i in n.input} | {o.name for o in m.graph.output}
    unused = [init.name for init in m.graph.initializer if init.name not in used]
    for name in unused:
        m.graph.initializer.remove(next(i for i in m.graph.initializer if i.name == name))
    onnx.checker.check_model(m)
    onnx.save(m, path)
    print(path, "removed", unused)
