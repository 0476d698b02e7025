"""MetaStyle nodes for ComfyUI: arbitrary style transfer by a meta network (metastyle-batch).

Installed into ``ComfyUI/custom_nodes/metastyle/`` by ``metastyle-batch comfyui install --comfy-dir DIR``; the
nodes call the ``metastyle_batch`` library, which must be installed in ComfyUI's own Python
(``pip install metastyle-batch``, see requirements.txt).
"""

try:
    from .nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS
except ImportError as exc:  # metastyle_batch is not installed in ComfyUI's Python
    if "metastyle_batch" not in str(exc):
        raise
    raise ImportError("the MetaStyle nodes need the metastyle-batch package in ComfyUI's Python: run "
                      "'python -m pip install metastyle-batch' with the python that starts ComfyUI") from exc

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS"]
