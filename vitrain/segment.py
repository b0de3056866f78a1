"""``python -m vitrain.segment``: the command-line tool in ``vitrain/tools/segment.py``."""

if __name__ == "__main__":
    import runpy

    runpy.run_module("vitrain.tools.segment", run_name="__main__")
