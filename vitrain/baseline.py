"""``python -m vitrain.baseline``: the command-line tool in ``vitrain/tools/baseline.py``."""

if __name__ == "__main__":
    import runpy

    runpy.run_module("vitrain.tools.baseline", run_name="__main__")
